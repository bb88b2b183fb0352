"""Checkpoint export / restore: a restored core holds the same programs and decides the same."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
from core_harness import Harness

from thunder_core.contract import ProgramStatus
from thunder_scheduling import make_scheduler
from thunder_scheduling.checkpoint import ProgramCheckpoint, export_all, restore
from thunder_scheduling.commands import Admit, Command, Pause
from thunder_scheduling.events import ProgramEnded
from thunder_scheduling.scheduler import ProgramScheduler


def _loaded() -> Harness:
    """Two backends of 1,000 tokens, six programs: four active, two paused in order."""
    h = Harness("thunder", backends={"a": 1000, "b": 1000})
    for i in range(6):
        h.start(f"p{i}", priority=i % 2, tags={"team": "x"})
        h.request(f"p{i}", 400)
        h.advance(1.0)
    for i in range(6):
        if h.program(f"p{i}").status is ProgramStatus.ACTIVE:
            h.finish(f"p{i}", prompt=380, completion=20, cached=0, tool_call=True)
            h.advance(0.5)
    h.tool_start("p0", "c1", "pytest", expected_duration_s=30.0)
    h.tool_start("p1", "c2", "grep")
    h.tool_end("p1", "c2")
    h.advance(2.0)
    return h


def _restored(h: Harness, shift: float) -> ProgramScheduler:
    globals_, programs = export_all(h.scheduler)
    fresh = make_scheduler("thunder")
    restore(fresh, globals_, programs, globals_.at + shift)
    return fresh


def _rows(core: ProgramScheduler) -> list[tuple[object, ...]]:
    return [
        (r.program_id, r.status, r.phase, r.backend, r.priority, r.tags, r.context_tokens,
         r.requests, r.tool_calls, r.current_tool, r.pause_count, r.incarnation)
        for r in core.snapshot().programs
    ]


def _names(commands: list[Command]) -> list[tuple[str, str, str]]:
    """Commands other than ``Admit`` (held requests died with the process: not restored)."""
    return [(type(c).__name__, c.program_id, getattr(c, "backend", "")) for c in commands
            if not isinstance(c, Admit)]


@pytest.mark.parametrize("shift", [0.0, 1234.5])
def test_restore_gives_the_same_table_and_the_same_later_decisions(shift: float) -> None:
    h = _loaded()
    paused = [r.program_id for r in h.scheduler.snapshot().programs
              if r.status is ProgramStatus.PAUSED]
    assert len(paused) >= 2  # the workload overflows: some programs wait
    fresh = _restored(h, shift)
    assert _rows(fresh) == _rows(h.scheduler)
    assert fresh.snapshot().tool_estimates_s == h.scheduler.snapshot().tool_estimates_s
    before = {b.name: b.raw_active_tokens for b in h.scheduler.snapshot().backends}
    assert {b.name: b.raw_active_tokens for b in fresh.snapshot().backends} == before
    # the same later events give the same commands: who resumes where, in which order
    original: list[Command] = []
    again: list[Command] = []
    for step, pid in enumerate(["p1", "p2", "p3"]):
        at = h.now + 1.0 + step
        if h.scheduler.has_program(pid):
            original += h.scheduler.handle(ProgramEnded(at, pid))
            again += fresh.handle(ProgramEnded(at + shift, pid))
    assert _names(original) == _names(again)
    assert _rows(fresh) == _rows(h.scheduler)  # the same waiting programs placed, same places
    came_back = [r.program_id for r in fresh.snapshot().programs
                 if r.program_id in paused and r.status is ProgramStatus.ACTIVE]
    assert came_back, "a waiting program was placed"
    assert all(not isinstance(c, Pause) for c in again)


def test_restored_leases_and_tool_deadlines_keep_running() -> None:
    h = _loaded()
    fresh = _restored(h, 100.0)
    deadline = fresh.next_deadline()
    assert deadline is not None and deadline == h.scheduler.next_deadline() + 100.0  # type: ignore[operator]


def test_restore_refuses_a_core_with_programs_and_other_versions() -> None:
    h = _loaded()
    globals_, programs = export_all(h.scheduler)
    with pytest.raises(ValueError, match="without programs"):
        restore(h.scheduler, globals_, programs, h.now)
    with pytest.raises(ValueError, match="version"):
        restore(make_scheduler("thunder"), replace(globals_, version=99), programs, h.now)


def test_programs_on_a_backend_that_is_gone_come_back_paused_and_unplaced() -> None:
    h = _loaded()
    globals_, programs = export_all(h.scheduler)
    only_a = replace(globals_, backends=[b for b in globals_.backends if b.name == "a"])
    fresh = make_scheduler("thunder")
    restore(fresh, only_a, programs, h.now)
    for row in fresh.snapshot().programs:
        assert row.backend in ("a", None)
        if row.backend is None:
            assert row.status is ProgramStatus.PAUSED


def test_the_longest_pause_survives_a_restore_and_old_checkpoints_still_load() -> None:
    h = Harness("thunder", {"a": 1000}, max_paused_s=300.0)
    h.request("big", 900)
    h.request("late", 500)                # held: "big" holds the pool
    h.tick(301.0)                         # forced back by aging after a 301 s pause
    assert h.program("late").longest_pause_s == 301.0
    globals_, programs = export_all(h.scheduler)
    fresh = make_scheduler("thunder")
    restore(fresh, globals_, programs, globals_.at)
    row = fresh.program_snapshot("late")
    assert row is not None and row.longest_pause_s == 301.0
    older = {k: v for k, v in asdict(next(p for p in programs if p.program_id == "late")).items()
             if k != "longest_pause_s"}     # a checkpoint written before the field existed
    assert ProgramCheckpoint(**older).longest_pause_s == 0.0
