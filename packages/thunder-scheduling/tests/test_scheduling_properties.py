"""Property tests (hypothesis) on the pure thunder policy.

Generated event sequences over 2-3 backends and up to 6 programs, fed through the recording
harness (which checks the Admit/Hold/Release contract on every call). After every step:

* committed tokens on a healthy backend (active, not marked for pause) never exceed
  ``high_watermark * capacity``, unless at most one unmarked program is active there (a lone
  program larger than the pool runs alone);
* every paused program has been paused for less than ``max_paused_s`` (time jumps included);
* no program is lost or duplicated: the live ids are exactly the started-and-not-ended ones;
  an active program on an unhealthy backend is marked (paused at its response end);
* the same sequence gives the same commands (determinism).
"""

from __future__ import annotations

from typing import Any

from core_harness import Harness, OpPlayer, op
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thunder_core.contract import ProgramStatus
from thunder_scheduling.commands import Command

HIGH, LOW, MAX_PAUSED_S = 0.9, 0.7, 60.0



def run(
    ops: list[tuple[Any, ...]], page: int, check: bool, policy: str = "thunder"
) -> list[Command]:
    knobs: dict[str, Any] = (
        {"high_watermark": HIGH, "low_watermark": LOW} if policy == "thunder" else {}
    )
    h = Harness(
        policy,
        {"a": 2000, "b": 1500, "c": 1000},
        page_size_tokens=page,
        **knobs,
        max_paused_s=MAX_PAUSED_S,
        lease_s=600.0,
    )
    player = OpPlayer(h, page)
    for item in ops:
        player.play(item)
        if check:
            check_invariants(h, player.live, watermark=policy == "thunder")
    return h.log


def check_invariants(h: Harness, live: set[str], watermark: bool = True) -> None:
    snap = h.scheduler.snapshot()
    healthy = {b.name for b in snap.backends if b.healthy}
    for b in snap.backends:
        if not b.healthy or not watermark:
            continue
        unmarked = b.active_programs - b.marked_programs
        assert b.committed_tokens <= HIGH * b.capacity_tokens + 1e-6 or unmarked <= 1, b
    rows = [p for p in snap.programs if p.status is not ProgramStatus.TERMINATED]
    ids = [p.program_id for p in rows]
    assert len(ids) == len(set(ids)), "duplicated program"
    assert set(ids) == live, (set(ids), live)
    for p in rows:
        if p.status is ProgramStatus.PAUSED:
            assert p.paused_since is not None
            assert snap.at - p.paused_since < MAX_PAUSED_S, p
        elif p.backend is not None and p.backend not in healthy:
            assert p.marked and p.in_flight_requests > 0, p
        if p.status is ProgramStatus.ACTIVE and not p.marked:
            assert p.held_requests == 0, p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=60), st.sampled_from([1, 16, 64]))
def test_thunder_invariants_hold_under_any_event_sequence(ops: list[Any], page: int) -> None:
    run(ops, page, check=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(op, max_size=60), st.sampled_from([1, 16]))
def test_same_events_give_the_same_decisions(ops: list[Any], page: int) -> None:
    assert run(ops, page, check=False) == run(ops, page, check=False)
