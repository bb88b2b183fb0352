"""Rollout batches in the core (``rollouts.py``) on a manual clock: membership from the start
tags, group-aware placement with spill, stragglers first as a batch drains, and the cut-off."""

from __future__ import annotations

from typing import Any

import pytest
from core_harness import Harness

from thunder_core.contract import (
    ROLLOUT_GROUP_TAG,
    ROLLOUT_SAMPLE_TAG,
    ROLLOUT_TAG,
    ProgramEndStatus,
    ProgramStatus,
)
from thunder_scheduling import make_scheduler
from thunder_scheduling.checkpoint import export_all, restore
from thunder_scheduling.commands import Admit, Pause, Release, SetPriority
from thunder_scheduling.events import ProgramEnded, RolloutCut, RolloutStarted
from thunder_scheduling.rollouts import CUT_REASON, membership


def tags(batch: str, group: int, sample: int) -> dict[str, str]:
    return {ROLLOUT_TAG: batch, ROLLOUT_GROUP_TAG: str(group), ROLLOUT_SAMPLE_TAG: str(sample)}


def start_batch(h: Harness, batch: str, groups: int, samples: int, **kw: Any) -> list[str]:
    pids = []
    for g in range(groups):
        for s in range(samples):
            pid = f"{batch}-g{g}-s{s}"
            h.start(pid, tags=tags(batch, g, s), **kw)
            pids.append(pid)
    return pids


def admitted_on(h: Harness, pid: str) -> str:
    return [c for c in h.of(Admit) if c.program_id == pid][-1].backend


# -- membership ----------------------------------------------------------------------------------


def test_membership_is_read_from_the_start_tags_only() -> None:
    assert membership(tags("b", 3, 1)) is not None
    assert membership(tags("b", 3, 1)) == membership({**tags("b", 3, 1), "other": "x"})
    assert membership({"team": "x"}) is None
    h = Harness("thunder", {"a": 10_000})
    pids = start_batch(h, "step1", 2, 2)
    h.start("plain", tags={"team": "x"})
    status = h.scheduler.rollout("step1")
    assert status is not None
    assert status.live_program_ids == tuple(pids)
    assert h.scheduler.rollout("plain") is None


# -- group-aware placement -----------------------------------------------------------------------


def test_siblings_follow_their_group_instead_of_the_emptiest_backend() -> None:
    """Group 0's first sample lands on ``a`` (most room); its siblings go to ``a`` too even
    though ``b`` has more room after, where untagged programs would spread by room."""
    h = Harness("thunder", {"a": 10_000, "b": 10_000})
    start_batch(h, "r", 1, 3)
    h.request("r-g0-s0", 1000)
    h.finish("r-g0-s0", 1000, 10, cached=0)
    h.request("r-g0-s1", 1000)
    h.request("r-g0-s2", 1000)
    assert {admitted_on(h, p) for p in ("r-g0-s0", "r-g0-s1", "r-g0-s2")} == {"a"}
    # control: the same arrivals without tags spread by free room
    u = Harness("thunder", {"a": 10_000, "b": 10_000})
    for pid in ("u0", "u1", "u2"):
        u.start(pid)
    u.request("u0", 1000)
    u.finish("u0", 1000, 10, cached=0)
    u.request("u1", 1000)
    assert admitted_on(u, "u1") == "b"


def test_a_group_spills_once_it_would_exceed_its_fair_share() -> None:
    """Two groups of three in one batch over two backends of 10,000 tokens at the 0.9 low
    watermark: each group's fair share is 0.9 * 20,000 * 3 / 6 = 9,000 tokens. Siblings of
    4,000 tokens: two fit the share on the group's backend, the third spills."""
    h = Harness("thunder", {"a": 10_000, "b": 10_000})
    start_batch(h, "r", 2, 3)
    h.request("r-g0-s0", 4000)
    h.request("r-g0-s1", 4000)
    h.request("r-g0-s2", 4000)
    first = admitted_on(h, "r-g0-s0")
    assert admitted_on(h, "r-g0-s1") == first
    assert admitted_on(h, "r-g0-s2") != first


def test_the_fair_share_splits_a_large_group_even_with_room_left() -> None:
    """One backend has room for the whole group, but the batch has two groups: the group
    keeps to its share (0.9 * 40,000 * 2/4 = 18,000) and spills the rest."""
    h = Harness("thunder", {"a": 30_000, "b": 10_000})
    start_batch(h, "r", 2, 2)
    h.request("r-g0-s0", 10_000)
    h.request("r-g0-s1", 10_000)
    assert admitted_on(h, "r-g0-s0") == "a"
    assert admitted_on(h, "r-g0-s1") == "b"
    # within the share it stays: a group of two with 8,000-token samples shares ``a``
    k = Harness("thunder", {"a": 30_000, "b": 10_000})
    start_batch(k, "r", 2, 2)
    k.request("r-g0-s0", 8000)
    k.request("r-g0-s1", 8000)
    assert admitted_on(k, "r-g0-s1") == "a"


def test_baselines_ignore_rollout_placement() -> None:
    """Comparison policies are not rollout-aware: ``sticky`` spreads siblings by room."""
    h = Harness("sticky", {"a": 10_000, "b": 10_000})
    start_batch(h, "r", 1, 2)
    h.request("r-g0-s0", 1000)
    h.request("r-g0-s1", 1000)
    assert admitted_on(h, "r-g0-s0") != admitted_on(h, "r-g0-s1")


# -- stragglers ----------------------------------------------------------------------------------


def _drain(h: Harness, pids: list[str], count: int) -> None:
    for pid in pids[:count]:
        h.end(pid)


def test_stragglers_get_the_engine_priority_boost_once_the_batch_drains() -> None:
    h = Harness("thunder", {"a": 100_000})
    pids = start_batch(h, "r", 1, 4)
    for pid in pids:
        h.request(pid, 100)
    _drain(h, pids, 2)  # half ended: not yet draining ("more than half")
    assert not [c for c in h.of(SetPriority) if c.priority > 0]
    h.end(pids[2])
    boosted = {c.program_id: c.priority for c in h.of(SetPriority) if c.priority > 0}
    assert boosted == {pids[3]: 100}
    assert h.scheduler.rollout("r") is not None
    assert h.scheduler.rollout("r").draining  # type: ignore[union-attr]


def _overflow(h: Harness, pids: list[str], ended: int) -> list[str]:
    """A member and an untagged program of 1,500 tokens each in a tool (the member started
    first, so it is first in the thunder policy's pause order at equal size); ``ended``
    members end; then a third program's response grows it to 7,500 tokens: committed
    10,500 > 0.98 * 10,000, so 1,500 tokens (one program) are paused. Returns the paused."""
    h.start("other")
    h.request(pids[-1], 1500)
    h.finish(pids[-1], 1400, 100, cached=0)
    h.request("other", 1500)
    h.finish("other", 1400, 100, cached=0)
    h.request("grow", 100)
    _drain(h, pids, ended)
    h.finish("grow", 7400, 100, cached=0)
    return [c.program_id for c in h.of(Pause)]


def test_stragglers_are_paused_last() -> None:
    h = Harness("thunder", {"a": 10_000})
    pids = start_batch(h, "r", 1, 3)
    assert _overflow(h, pids, ended=2) == ["other"]  # 2 of 3 ended: the member is spared


def test_without_a_draining_batch_the_same_overflow_pauses_the_member() -> None:
    """The control for the test above: before the batch drains, the member is paused (first
    in the policy's order), so the straggler rule is what spared it."""
    h = Harness("thunder", {"a": 10_000})
    pids = start_batch(h, "r", 1, 3)
    assert _overflow(h, pids, ended=1) == [pids[-1]]


def test_stragglers_are_restored_first() -> None:
    """Two programs wait for room; once room appears the straggler is admitted before an
    older, smaller, untagged waiter (the thunder policy alone: smallest first)."""
    h = Harness("thunder", {"a": 10_000})
    pids = start_batch(h, "r", 1, 3)
    h.start("big")
    h.request("big", 8500)
    h.request("other", 600)  # 8,500 + 600 > 0.9 * 10,000: waits
    h.request(pids[2], 800)  # waits too (the policy alone would restore ``other`` first)
    assert h.program("other").status is ProgramStatus.PAUSED
    assert h.program(pids[2]).status is ProgramStatus.PAUSED
    _drain(h, pids, 2)  # the batch drains: pids[2] is a straggler now
    h.finish("big", 8500, 0, cached=0)
    h.feed(ProgramEnded(h.now, "big"))
    resumed_first = [c.program_id for c in h.of(Admit) if c.program_id in ("other", pids[2])]
    assert resumed_first[0] == pids[2]


# -- cut-off -------------------------------------------------------------------------------------


def test_a_cut_releases_what_is_left_and_reports_it() -> None:
    h = Harness("thunder", {"a": 100_000})
    pids = start_batch(h, "r", 2, 2)
    for pid in pids:
        h.request(pid, 100)
    h.end(pids[0])
    h.start("plain")
    h.request("plain", 100)
    commands = h.feed(RolloutCut(h.now, "r"))
    released = {c.program_id: c.reason for c in h.of(Release, commands)}
    assert released == {pid: CUT_REASON for pid in pids[1:]}
    status = h.scheduler.rollout("r")
    assert status is not None
    assert status.cut_program_ids == tuple(pids[1:])
    assert status.live_program_ids == ()
    assert h.program(pids[1]).status is ProgramStatus.TERMINATED
    assert h.program(pids[1]).end_status is ProgramEndStatus.CANCELLED
    assert h.program("plain").status is ProgramStatus.ACTIVE
    assert h.counters().rollout_cut_programs == 3


def test_the_cut_fraction_cuts_the_batch_by_itself() -> None:
    h = Harness("round_robin", {"a": 100_000})
    h.feed(RolloutStarted(h.now, "r", size=4, cut_fraction=0.75))
    pids = start_batch(h, "r", 2, 2)
    for pid in pids:
        h.request(pid, 100)
    h.end(pids[0])
    h.end(pids[1])
    assert not [c for c in h.of(Release) if c.reason == CUT_REASON]
    commands = h.end(pids[2])  # 3 of 4 = 0.75: the last one is cut
    assert [(c.program_id, c.reason) for c in h.of(Release, commands)] == [
        (pids[2], "ended"),
        (pids[3], CUT_REASON),
    ]
    status = h.scheduler.rollout("r")
    assert status is not None and status.cut_program_ids == (pids[3],)


def test_the_declared_size_counts_programs_not_started_yet() -> None:
    """With ``size`` declared, two ended of four is not three quarters even if only two
    have started."""
    h = Harness("thunder", {"a": 100_000})
    h.feed(RolloutStarted(h.now, "r", size=4, cut_fraction=0.75))
    pids = start_batch(h, "r", 1, 3)
    _drain(h, pids, 2)
    assert h.program(pids[2]).status is ProgramStatus.ACTIVE


@pytest.mark.parametrize("bad", [{"size": 0}, {"cut_fraction": 0.0}, {"cut_fraction": 1.5}])
def test_bad_batch_parameters_are_refused(bad: dict[str, Any]) -> None:
    h = Harness("thunder")
    with pytest.raises(ValueError):
        h.feed(RolloutStarted(h.now, "r", **bad))


def test_cutting_an_unknown_batch_is_refused() -> None:
    h = Harness("thunder")
    with pytest.raises(ValueError, match="unknown rollout"):
        h.feed(RolloutCut(h.now, "nope"))


def test_a_restored_core_knows_the_batch_from_its_members_tags() -> None:
    h = Harness("thunder", {"a": 100_000})
    pids = start_batch(h, "r", 2, 2)
    h.end(pids[0])
    globals_, programs = export_all(h.scheduler)
    fresh = make_scheduler("thunder")
    restore(fresh, globals_, programs, h.now)
    status = fresh.rollout("r")
    assert status is not None
    assert status.live_program_ids == tuple(pids[1:])


# -- shared prefixes -----------------------------------------------------------------------------


def test_each_group_prompt_is_counted_once_per_backend() -> None:
    """Two GRPO groups with different prompts on one backend: the KV holds both prompts once
    each, so the shared pool is their sum (the common system prompt rule, the largest of them,
    would under-count the second group's prompt)."""
    h = Harness("sticky", {"a": 1_000_000})
    prompts = {0: 6_400, 1: 3_200}
    start_batch(h, "b", 2, 3)
    for g, prompt in prompts.items():
        for s in range(3):
            pid = f"b-g{g}-s{s}"
            h.request(pid, prompt + 100)
            h.finish(pid, prompt + 100, 50, cached=0 if s == 0 else prompt)
    backend = h.backend("a")
    assert backend.shared_prefix_tokens == 6_400 + 3_200
    own = sum(6_400 + 150 if s == 0 else 150 for s in range(3)) + sum(
        3_200 + 150 if s == 0 else 150 for s in range(3))
    assert backend.raw_active_tokens == own + 6_400 + 3_200
    # the group's pool goes when its last sharer leaves; the other group's stays
    for s in (1, 2):
        h.end(f"b-g1-s{s}")
    assert h.backend("a").shared_prefix_tokens == 6_400


def test_programs_outside_a_batch_still_share_the_largest_prefix_once() -> None:
    h = Harness("sticky", {"a": 1_000_000})
    for pid, cached in (("p", 0), ("q", 1_280), ("r", 640)):
        h.start(pid)
        h.request(pid, 2_000)
        h.finish(pid, 2_000, 10, cached=cached)
    assert h.backend("a").shared_prefix_tokens == 1_280
