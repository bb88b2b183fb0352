"""The decision passes ``ProgramScheduler`` runs after every event and tick, in this order:
deadlines (acting weights that switch now, prewarm of programs about to return), leases,
overflow relief on the backends the event touched (an irredundant set of pauses), aging
(programs paused too long forced back) and restores (cancelled marks, promoted waiters, then
the queue). docs/scheduling.md states each rule; every pass takes candidates from ordered
structures (heaps, FIFO), never every program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thunder_core.contract import ProgramEndStatus, ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import BackendLedger
from thunder_scheduling.commands import Prewarm
from thunder_scheduling.policy import fits
from thunder_scheduling.queues import Entry

if TYPE_CHECKING:
    from thunder_scheduling.program_table import Program
    from thunder_scheduling.scheduler import ProgramScheduler


def decide(s: ProgramScheduler, now: float) -> None:
    _fire_deadlines(s, now)
    _expire_leases(s, now)
    if s.policy.pauses:
        for name in sorted(s._dirty):
            _relieve(s, s._ledgers[name], now)
    s._dirty.clear()
    _force_aged(s, now)
    _restore(s, now)
    s._room_changed = False


def _fire_deadlines(s: ProgramScheduler, now: float) -> None:
    while True:
        entry = s._deadlines.pop_valid()
        if entry is None:
            return
        if entry[0][0] > now:
            s._deadlines.push_back([entry])
            return
        program = s._table_get(entry[2])
        s._deadlines.discard(program.program_id)
        if program.phase is not ProgramPhase.ACTING or program.weight_switch_at is None:
            continue
        program.weight_mode = program.weight_then
        program.weight_switch_at = None
        prewarm = program.prewarm_at_switch and program.paused_in_spell
        s._sync(program, now)
        if program.status is ProgramStatus.ACTIVE and program.backend is not None:
            s._dirty[program.backend] = None
            if prewarm:
                s._count("prewarms")
                s._out.append(Prewarm(program.program_id, program.backend))
        elif program.status is ProgramStatus.PAUSED:
            backend = s._place(program, now, restoring=True)
            if backend is not None:
                s._resume(program, backend, now)
                if program.prewarm_at_switch:
                    s._count("prewarms")
                    s._out.append(Prewarm(program.program_id, backend))


def _expire_leases(s: ProgramScheduler, now: float) -> None:
    for lease_s, group in list(s._leases.items()):
        expired: list[str] = []
        for program_id, last in group.items():
            if last + lease_s > now:
                break
            expired.append(program_id)
        for program_id in expired:
            s._count("lease_expiries")
            s._terminate(s._table_get(program_id), ProgramEndStatus.CANCELLED, "lease_expired", now)


def _take(
    s: ProgramScheduler,
    ledger: BackendLedger,
    need: float,
    now: float,
    spared: dict[str, None],
    keep: int,
) -> list[tuple[Program, float]]:
    """Pause candidates on ``ledger`` covering ``need`` weighted tokens (irredundant),
    leaving at least ``keep`` unmarked programs active there."""
    heap = s._pause_heaps[ledger.name]
    chosen: list[tuple[Program, float]] = []
    skipped: list[Entry] = []
    covered = 0.0
    while covered < need and len(chosen) < ledger.unmarked_count() - keep:
        entry = heap.pop_valid()
        if entry is None:
            break
        program = s._table_get(entry[2])
        if program.program_id in spared:
            skipped.append(entry)
            continue
        weight = ledger.weight(ledger.charges[program.program_id], now)
        chosen.append((program, weight))
        skipped.append(entry)
        covered += weight
    pruned: list[tuple[Program, float]] = []
    for index, (program, weight) in enumerate(chosen):
        rest = covered - weight
        if rest >= need and index < len(chosen) - 1:
            covered = rest
            continue
        pruned.append((program, weight))
    heap.push_back(skipped)
    return pruned


def _apply_pauses(s: ProgramScheduler, chosen: list[tuple[Program, float]], now: float) -> None:
    for program, _weight in chosen:
        if program.in_flight:
            s._mark(program, now)
        else:
            s._pause(program, now, reason="overflow")


def _relieve(s: ProgramScheduler, ledger: BackendLedger, now: float) -> None:
    if not ledger.healthy or ledger.capacity_tokens <= 0 or ledger.unmarked_count() <= 1:
        return
    committed = ledger.committed_tokens(now)
    if committed <= s.policy.high_watermark * ledger.capacity_tokens:
        return
    need = committed - s.policy.low_watermark * ledger.capacity_tokens
    _apply_pauses(s, _take(s, ledger, need, now, {}, keep=1), now)


def _force_aged(s: ProgramScheduler, now: float) -> None:
    if not s._waiting:
        return
    aged = s._waiting.waited_at_least(s.config.max_paused_s, now)
    spared: dict[str, None] = {}
    for program_id in aged:
        program = s._table_get(program_id)
        backend = s._place(program, now, restoring=True, forced=True)
        if backend is None:
            backend = _fallback_backend(s, program, now)
        if backend is None:
            continue  # no healthy backend at all: nothing can run
        ledger = s._ledgers[backend]
        weight = s._weight_if_active(program, ledger, now)
        limit = s.policy.low_watermark * ledger.capacity_tokens
        need = float("inf") if weight > limit else ledger.committed_tokens(now) + weight - limit
        if need > 0 and s.policy.pauses:
            _apply_pauses(s, _take(s, ledger, need, now, spared, keep=0), now)
        s._count("forced_restores")
        s._resume(program, backend, now)
        spared[program_id] = None


def _fallback_backend(s: ProgramScheduler, program: Program, now: float) -> str | None:
    if program.backend is not None:
        previous = s._ledgers[program.backend]
        if previous.healthy and previous.capacity_tokens > 0:
            return previous.name
    best: str | None = None
    best_room = 0.0
    for name, ledger in sorted(s._ledgers.items()):
        if not ledger.healthy or ledger.capacity_tokens <= 0:
            continue
        room = ledger.capacity_tokens - ledger.committed_tokens(now)
        if best is None or room > best_room:
            best, best_room = name, room
    return best


def _any_room(s: ProgramScheduler, now: float) -> bool:
    """Whether any healthy backend has room under the low watermark (or is empty)."""
    for ledger in s._ledgers.values():
        if not ledger.healthy or ledger.capacity_tokens <= 0:
            continue
        if ledger.unmarked_count() == 0:
            return True
        if ledger.committed_tokens(now) < s.policy.low_watermark * ledger.capacity_tokens:
            return True
    return False


def _restore(s: ProgramScheduler, now: float) -> None:
    for _name, ledger in sorted(s._ledgers.items()):
        if not ledger.marked or not ledger.healthy:
            continue
        limit = s.policy.low_watermark * ledger.capacity_tokens
        for program_id in list(ledger.marked):
            weight = ledger.weight(ledger.charges[program_id], now)
            if ledger.committed_tokens(now) + weight <= limit:
                s._unmark(s._table_get(program_id), now)
    if not s._waiting or not (s._room_changed or now >= s._next_scan_at):
        return
    s._next_scan_at = now + s.config.tick_s / 10
    if not _any_room(s, now):
        return
    promote_after_s = s.policy.promote_after_s
    if promote_after_s is not None:
        while (oldest := s._waiting.oldest()) is not None and oldest[1] <= now - promote_after_s:
            program = s._table_get(oldest[0])
            backend = s._place(program, now, restoring=True)
            if backend is None:
                return  # head-of-line: room accumulates for the longest waiter
            s._resume(program, backend, now)
    failures = 0
    taken: list[Entry] = []
    heap = s._waiting.heap
    prefilter = s.policy.restore_needs_fit
    view = s._view(now, restoring=True)
    healthy = view.healthy()  # no event runs inside a pass: health does not change
    low = s.policy.low_watermark
    while failures < s.policy.restore_scan_limit:
        entry = heap.pop_valid()
        if entry is None:
            break
        program = s._table_get(entry[2])
        if prefilter and not any(fits(program, ledger, view, low) for ledger in healthy):
            failures += 1  # what ``place`` would answer (``restore_needs_fit``), cheaper
            taken.append(entry)
            continue
        backend = s._place(program, now, restoring=True)
        if backend is None:
            failures += 1
            taken.append(entry)
            continue
        s._resume(program, backend, now)
    heap.push_back(taken)


__all__ = ["decide"]
