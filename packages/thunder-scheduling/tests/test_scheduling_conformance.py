"""One conformance suite for every policy in the registry (Hypothesis over event sequences).

Generated sequences over three backends (health and capacity changing) and up to six
programs, fed through the recording harness, which checks the driver contract on every call
(each request answered once at arrival, a held request admitted once later unless its
program's ``Release`` names it). After every step, for every registered policy:

* **no loss, no duplication**: the live programs are exactly the started-and-not-ended
  ones, each once; an active program on an unhealthy backend is marked (paused when its
  response ends); an active unmarked program holds no request;
* **watermark bound** (policies running the scheduler's own passes with pausing on):
  committed tokens on a healthy backend never exceed ``high_watermark x capacity`` unless at
  most one unmarked program is active there; a policy bringing its own passes states its own
  bound (``thunderagent``: after each of its ticks, its capacity estimate is not negative, or
  nothing is left to pause on that backend);
* **aging / fairness**: no request waits (held) longer than the policy's bound, and under the
  scheduler's passes no program stays paused past ``max_paused_s`` (``thunderagent``: a
  waiting request forces its program back after ``wait_timeout_s``, checked at its tick);
* **determinism**: the same sequence gives the same commands.

A new policy is covered by registering it; one whose passes are its own adds its bounds to
``BOUNDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_harness import PIDS, Harness, OpPlayer, op
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thunder_core.contract import (
    ROLLOUT_GROUP_TAG,
    ROLLOUT_SAMPLE_TAG,
    ROLLOUT_TAG,
    ProgramStatus,
)
from thunder_scheduling import policy_names
from thunder_scheduling.commands import Command
from thunder_scheduling.events import RolloutStarted
from thunder_scheduling.policy import BasePolicy

MAX_PAUSED_S = 60.0
TA_TIMEOUT_S, TA_TICK_S = 60.0, 5.0
KNOBS: dict[str, dict[str, Any]] = {
    "thunderagent": {"wait_timeout_s": TA_TIMEOUT_S, "scheduler_interval_s": TA_TICK_S},
}



def standard_passes(h: Harness) -> bool:
    return type(h.scheduler.policy).decide is BasePolicy.decide


def check_standard(h: Harness, ticked: bool) -> None:
    snap = h.scheduler.snapshot()
    policy = h.scheduler.policy
    for b in snap.backends:
        if not b.healthy or not policy.pauses:
            continue
        unmarked = b.active_programs - b.marked_programs
        bound = policy.high_watermark * b.capacity_tokens
        assert b.committed_tokens <= bound + 1e-6 or unmarked <= 1, b
    for p in snap.programs:
        if p.status is ProgramStatus.PAUSED:
            assert p.paused_since is not None
            assert snap.at - p.paused_since < MAX_PAUSED_S, p


def check_thunderagent(h: Harness, ticked: bool) -> None:
    """Right after one of its ticks, every healthy backend is within ThunderAgent's own
    capacity estimate, or no acting and no unmarked reasoning program is left there."""
    if not ticked:
        return
    snap = h.scheduler.snapshot()
    config = h.scheduler.policy.config
    for b in snap.backends:
        if not b.healthy or b.capacity_tokens <= 0:
            continue
        rows = [p for p in snap.programs
                if p.status is ProgramStatus.ACTIVE and p.backend == b.name]
        used = sum(p.context_tokens * (1.0 if p.in_flight_requests or p.held_requests
                                       else config.acting_token_weight)
                   + config.buffer_per_program_tokens for p in rows)
        if used <= b.capacity_tokens:
            continue
        left = [p.program_id for p in rows if not p.in_flight_requests or not p.marked]
        assert not left, (b.name, used, left)


BOUNDS: dict[str, tuple[Callable[[Harness, bool], None], float]] = {
    "thunderagent": (check_thunderagent, TA_TIMEOUT_S + TA_TICK_S),
}
"""Policy -> (its own bound check, its longest wait for a held request)."""


def run(
    policy: str,
    ops: list[tuple[Any, ...]],
    page: int,
    check: bool,
    rollout: tuple[float | None] | None = None,
) -> list[Command]:
    """``rollout``: the six programs start as one RL rollout batch (three groups of two, the
    batch's ``cut_fraction`` given) before the ops, and a ``cut`` op cuts what is left."""
    h = Harness(
        policy,
        {"a": 2000, "b": 1500, "c": 1000},
        page_size_tokens=page,
        max_paused_s=MAX_PAUSED_S,
        lease_s=600.0,
        **KNOBS.get(policy, {}),
    )
    own_check, max_wait_s = BOUNDS.get(policy, (check_standard, MAX_PAUSED_S))
    player = OpPlayer(h, page, rollout="batch" if rollout is not None else None)
    ticks_before = 0.0
    if rollout is not None:
        h.feed(RolloutStarted(h.now, "batch", size=len(PIDS), cut_fraction=rollout[0]))
        for index, pid in enumerate(PIDS):
            h.start(pid, tags={ROLLOUT_TAG: "batch", ROLLOUT_GROUP_TAG: str(index // 2),
                               ROLLOUT_SAMPLE_TAG: str(index % 2)})
            player.live.add(pid)
    for item in ops:
        player.play(item)
        if check:
            check_common(h, player.live, player.held_since, max_wait_s)
            ticks = h.scheduler.counters.get("policy_ticks", 0.0)
            own_check(h, ticks > ticks_before)
            ticks_before = ticks
    return h.log


def check_common(
    h: Harness, live: set[str], held_since: dict[str, float], max_wait_s: float
) -> None:
    snap = h.scheduler.snapshot()
    healthy = {b.name for b in snap.backends if b.healthy}
    rows = [p for p in snap.programs if p.status is not ProgramStatus.TERMINATED]
    ids = [p.program_id for p in rows]
    assert len(ids) == len(set(ids)), "duplicated program"
    assert set(ids) == live, (set(ids), live)
    for p in rows:
        if p.status is ProgramStatus.ACTIVE and p.backend is not None and p.backend not in healthy:
            assert p.marked and p.in_flight_requests > 0, p
        if p.status is ProgramStatus.ACTIVE and not p.marked:
            assert p.held_requests == 0, p
    for rid in h.pending:
        assert snap.at - held_since[rid] < max_wait_s, (rid, snap.at, held_since[rid])


POLICIES = policy_names()


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=60), page=st.sampled_from([1, 16, 64]))
def test_policy_conforms_under_any_event_sequence(
    policy: str, ops: list[Any], page: int
) -> None:
    run(policy, ops, page, check=True)


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=60), page=st.sampled_from([1, 16]))
def test_policy_is_deterministic(policy: str, ops: list[Any], page: int) -> None:
    assert run(policy, ops, page, check=False) == run(policy, ops, page, check=False)


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(op, st.tuples(st.just("cut"))), max_size=60),
       page=st.sampled_from([1, 16, 64]),
       cut_fraction=st.one_of(st.none(), st.sampled_from([0.5, 0.75, 1.0])))
def test_policy_conforms_with_a_rollout_batch(
    policy: str, ops: list[Any], page: int, cut_fraction: float | None
) -> None:
    """The same bounds with the six programs in one rollout batch (group placement,
    stragglers, cut-off in play) and cuts among the events; the same commands twice."""
    log = run(policy, ops, page, check=True, rollout=(cut_fraction,))
    assert log == run(policy, ops, page, check=False, rollout=(cut_fraction,))


def test_every_registered_policy_is_covered() -> None:
    """The suite runs over the registry itself: a new policy cannot be left out."""
    assert set(POLICIES) >= {"thunder", "thunderagent", "round_robin", "cache_aware",
                             "continuum", "autellix", "sticky"}


pressure = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(PIDS), st.integers(200, 900)),
    st.tuples(st.just("finish"), st.sampled_from(PIDS), st.integers(300, 1200),
              st.integers(0, 300), st.just(0), st.just(True)),
    st.tuples(st.just("tick"), st.floats(4.0, 12.0)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(pressure, min_size=10, max_size=60))
def test_thunderagent_bound_under_memory_pressure(ops: list[Any]) -> None:
    """Requests and growing responses only, ticks every 4-12 s: its own bound is exercised
    (the general mix above rarely overflows its estimate right before a tick)."""
    run("thunderagent", ops, 1, check=True)
