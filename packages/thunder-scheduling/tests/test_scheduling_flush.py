"""A backend's weights are updated between two RL rollout batches (``BackendFlushed``): the core
forgets every cached-prefix assumption about it and loses no program, on a manual clock."""

from __future__ import annotations

import pytest
from core_harness import Harness

from thunder_core.contract import ProgramStatus
from thunder_scheduling.commands import Admit, Pause, Resume
from thunder_scheduling.events import BackendFlushed
from thunder_scheduling.policies.cache_aware import CacheAwarePolicy

PROMPT = 640
"""The GRPO group's shared prompt, in tokens."""


def _batch(h: Harness, pids: list[str]) -> None:
    """Each program sends its first request; all but the first find the prompt cached."""
    for index, pid in enumerate(pids):
        h.request(pid, PROMPT + 100)
        h.finish(pid, PROMPT + 100, 50, cached=0 if index == 0 else PROMPT)


def test_a_flush_drops_the_shared_prefix_and_keeps_every_program_placed() -> None:
    h = Harness("sticky", {"a": 100_000})
    pids = ["g0s0", "g0s1", "g0s2"]
    _batch(h, pids)
    assert h.backend("a").shared_prefix_tokens == PROMPT
    shared_charge = h.backend("a").active_tokens
    h.advance(1.0)

    h.feed(BackendFlushed(h.now, "a"))

    backend = h.backend("a")
    assert backend.shared_prefix_tokens == 0
    # every program is charged its whole context again: nothing is assumed shared any more
    assert backend.active_tokens == 3 * (PROMPT + 150)
    assert backend.active_tokens > shared_charge
    for pid in pids:
        row = h.program(pid)
        assert (row.status, row.backend) == (ProgramStatus.ACTIVE, "a")
    assert h.counters().backend_flushes == 1


def test_after_a_flush_cached_tokens_are_read_afresh() -> None:
    """The next batch's first response on the backend is again the one that tells what is
    shared: a stale "already answered here" would keep the new prefix from being counted."""
    h = Harness("sticky", {"a": 100_000})
    _batch(h, ["p1", "p2"])
    h.feed(BackendFlushed(h.now, "a"))
    h.request("p2", 2000)
    h.finish("p2", 2000, 10, cached=512)
    assert h.backend("a").shared_prefix_tokens == 512


def test_a_weight_update_between_batches_loses_no_program() -> None:
    """The engine goes away for the update (unhealthy), its cache is flushed, it comes back:
    its programs are paused, their requests held, then resumed and admitted there."""
    h = Harness("thunder", {"a": 100_000})
    pids = [f"g{g}s{s}" for g in range(2) for s in range(2)]
    _batch(h, pids)
    h.advance(1.0)
    paused = h.of(Pause, h.backend_update("a", 100_000, healthy=False))
    assert sorted(c.program_id for c in paused) == sorted(pids)
    h.advance(1.0)
    h.feed(BackendFlushed(h.now, "a"))
    held = [h.request(pid, PROMPT + 200) for pid in pids]
    assert not any(h.of(Admit, commands) for commands in held)  # held while it is away

    h.advance(5.0)
    back = h.backend_update("a", 100_000, healthy=True) + h.tick(1.0)
    assert sorted(c.program_id for c in h.of(Resume, back)) == sorted(pids)
    assert sorted(c.program_id for c in h.of(Admit, back)) == sorted(pids)
    assert not h.pending
    for pid in pids:
        row = h.program(pid)
        assert (row.status, row.backend, row.end_status) == (ProgramStatus.ACTIVE, "a", None)
    assert h.backend("a").shared_prefix_tokens == 0


def test_the_cache_aware_router_forgets_the_flushed_workers_tree() -> None:
    h = Harness("cache_aware", {"a": 100_000, "b": 100_000})
    h.request("p1", 1000, prompt_blocks=(1, 2, 3))
    policy = h.scheduler.policy
    assert isinstance(policy, CacheAwarePolicy)
    owner = policy.router.tree.prefix_match((1, 2, 3), h.now)[1]
    assert owner in ("a", "b")
    other = "b" if owner == "a" else "a"
    h.request("p2", 1000, prompt_blocks=(9,))

    h.feed(BackendFlushed(h.now, owner))

    assert policy.router.tree.prefix_match((1, 2, 3), h.now) == (0, None)
    assert policy.router.tree.size_blocks[owner] == 0
    assert policy.router.tree.size_blocks[other] > 0  # the other worker's tree stays


def test_flushing_an_unknown_backend_is_refused() -> None:
    h = Harness("sticky", {"a": 1000})
    with pytest.raises(ValueError, match="unknown backend 'z'"):
        h.feed(BackendFlushed(h.now, "z"))
