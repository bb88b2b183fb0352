"""The decision passes ``ProgramScheduler`` runs after every event and tick, in this order:
deadlines (acting weights that switch now, prewarm of programs about to return), leases,
overflow relief on the backends the event touched (an irredundant set of pauses), aging
(programs paused too long forced back) and restores (cancelled marks, promoted waiters, then
the queue). docs/scheduling.md states each rule; every pass takes candidates from ordered
structures (heaps, FIFO), never every program.
The passes see the scheduler only through ``SchedulerControl`` (``control.py``); a policy may
replace them with its own (its ``decide`` hook), ``decide`` here is the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thunder_core.contract import ProgramEndStatus, ProgramStatus
from thunder_scheduling.accounting import BackendLedger
from thunder_scheduling.kv_tiers import KvTier
from thunder_scheduling.policy import fits

if TYPE_CHECKING:
    from thunder_scheduling.control import SchedulerControl
    from thunder_scheduling.program_table import Program


def decide(ctl: SchedulerControl, now: float) -> None:
    fire_deadlines(ctl, now)
    expire_leases(ctl, now)
    touched = ctl.take_touched_backends()
    if ctl.policy.pauses:
        for name in touched:
            relieve(ctl, ctl.ledger(name), now)
    force_aged(ctl, now)
    restore(ctl, now)
    ctl.pass_done()


def next_decision_at(ctl: SchedulerControl, now: float) -> float | None:
    """When these passes need a tick: the earliest aging deadline, and ``tick_s`` from now
    while anything waits (restores as time passes); ``None`` if nothing waits."""
    aging = ctl.next_aging_deadline()
    if aging is None:
        return None
    return min(aging, now + ctl.config.tick_s)


def fire_deadlines(ctl: SchedulerControl, now: float) -> None:
    for program in ctl.due_weight_switches(now):
        prewarm = ctl.apply_weight_switch(program, now)
        if prewarm is None:
            continue  # left the tool meanwhile: nothing to switch
        if program.status is ProgramStatus.ACTIVE and program.backend is not None:
            ctl.mark_touched(program.backend)
            if prewarm:
                ctl.prewarm(program, program.backend)
        elif program.status is ProgramStatus.PAUSED:
            backend = ctl.place(program, now, restoring=True)
            if backend is not None:
                ctl.resume(program, backend, now)
                if program.prewarm_at_switch:
                    ctl.prewarm(program, backend)


def expire_leases(ctl: SchedulerControl, now: float) -> None:
    for program in ctl.idle_past_lease(now):
        ctl.count("lease_expiries")
        ctl.release(program, ProgramEndStatus.CANCELLED, "lease_expired", now)


def take(
    ctl: SchedulerControl,
    ledger: BackendLedger,
    need: float,
    now: float,
    spared: dict[str, None],
    keep: int,
) -> list[tuple[Program, float]]:
    """Pause candidates on ``ledger`` covering ``need`` weighted tokens (irredundant),
    leaving at least ``keep`` unmarked programs active there."""
    chosen: list[tuple[Program, float]] = []
    covered = 0.0
    with ctl.pause_order(ledger.name) as order:
        while covered < need and len(chosen) < ledger.unmarked_count() - keep:
            program = order.next()
            if program is None:
                break
            if program.program_id in spared:
                continue
            weight = ledger.weight(ledger.charges[program.program_id], now)
            chosen.append((program, weight))
            covered += weight
    pruned: list[tuple[Program, float]] = []
    for index, (program, weight) in enumerate(chosen):
        rest = covered - weight
        if rest >= need and index < len(chosen) - 1:
            covered = rest
            continue
        pruned.append((program, weight))
    return pruned


def apply_pauses(ctl: SchedulerControl, chosen: list[tuple[Program, float]], now: float) -> None:
    for program, _weight in chosen:
        ctl.pause_or_mark(program, now)


def relieve(ctl: SchedulerControl, ledger: BackendLedger, now: float) -> None:
    if not ledger.healthy or ledger.capacity_tokens <= 0 or ledger.unmarked_count() <= 1:
        return
    committed = ledger.committed_tokens(now)
    if committed <= ctl.policy.high_watermark * ledger.capacity_tokens:
        return
    need = committed - ctl.policy.low_watermark * ledger.capacity_tokens
    apply_pauses(ctl, take(ctl, ledger, need, now, {}, keep=1), now)


def force_aged(ctl: SchedulerControl, now: float) -> None:
    if not ctl.waiting_count():
        return
    spared: dict[str, None] = {}
    for program in ctl.aged(now):
        backend = ctl.place(program, now, restoring=True, forced=True)
        if backend is None:
            backend = fallback_backend(ctl, program, now)
        if backend is None:
            continue  # no healthy backend at all: nothing can run
        ledger = ctl.ledger(backend)
        weight = ctl.weight_if_active(program, ledger, now)
        limit = ctl.policy.low_watermark * ledger.capacity_tokens
        need = float("inf") if weight > limit else ledger.committed_tokens(now) + weight - limit
        if need > 0 and ctl.policy.pauses:
            apply_pauses(ctl, take(ctl, ledger, need, now, spared, keep=0), now)
        ctl.count("forced_restores")
        ctl.resume(program, backend, now)
        spared[program.program_id] = None


def fallback_backend(ctl: SchedulerControl, program: Program, now: float) -> str | None:
    if program.backend is not None:
        previous = ctl.ledger(program.backend)
        if previous.healthy and previous.capacity_tokens > 0:
            return previous.name
    best: str | None = None
    best_room = 0.0
    for ledger in ctl.ledgers():
        if not ledger.healthy or ledger.capacity_tokens <= 0:
            continue
        room = ledger.capacity_tokens - ledger.committed_tokens(now)
        if best is None or room > best_room:
            best, best_room = ledger.name, room
    return best


def any_room(ctl: SchedulerControl, now: float) -> bool:
    """Whether any healthy backend has room under the low watermark (or is empty)."""
    for ledger in ctl.ledgers():
        if not ledger.healthy or ledger.capacity_tokens <= 0:
            continue
        if ledger.unmarked_count() == 0:
            return True
        if ledger.committed_tokens(now) < ctl.policy.low_watermark * ledger.capacity_tokens:
            return True
    return False


def cancel_marks(ctl: SchedulerControl, now: float) -> None:
    """Unmark programs that fit under the low watermark again."""
    for ledger in ctl.ledgers():
        if not ledger.marked or not ledger.healthy:
            continue
        limit = ctl.policy.low_watermark * ledger.capacity_tokens
        for program_id in list(ledger.marked):
            weight = ledger.weight(ledger.charges[program_id], now)
            if ledger.committed_tokens(now) + weight <= limit:
                ctl.unmark(ctl.program(program_id), now)


def gone_on_host(ctl: SchedulerControl, program: Program) -> bool:
    """A waiter whose KV is gone while its backend keeps others' in host memory: promoting
    it (a soft rule) would recompute it ahead of programs that load back cheaply and push
    host entries out; only the aging bound (the hard rule) forces it ahead of them."""
    return program.kv_tier is KvTier.GONE and ctl.tiers.has_host(program.backend)


def restore(ctl: SchedulerControl, now: float) -> None:
    cancel_marks(ctl, now)
    if not ctl.waiting_count() or not ctl.restore_scan_due(now):
        return
    if not any_room(ctl, now):
        return
    policy = ctl.policy
    promote_after_s = policy.promote_after_s
    if promote_after_s is not None:
        while (oldest := ctl.oldest_waiting()) is not None and oldest[1] <= now - promote_after_s:
            if gone_on_host(ctl, oldest[0]):
                break  # cheaper restores first; the aging bound still brings it back
            backend = ctl.place(oldest[0], now, restoring=True)
            if backend is None:
                return  # head-of-line: room accumulates for the longest waiter
            ctl.resume(oldest[0], backend, now)
    failures = 0
    prefilter = policy.restore_needs_fit
    view = ctl.view(now, restoring=True)
    healthy = view.healthy()  # no event runs inside a pass: health does not change
    low = policy.low_watermark
    with ctl.restore_order() as order:
        while failures < policy.restore_scan_limit:
            candidate = order.next()
            if candidate is None:
                break
            program = candidate
            if prefilter and not any(fits(program, ledger, view, low) for ledger in healthy):
                failures += 1  # what ``place`` would answer (``restore_needs_fit``), cheaper
                continue
            backend = ctl.place(program, now, restoring=True)
            if backend is None:
                failures += 1
                continue
            ctl.resume(program, backend, now)


__all__ = ["decide", "expire_leases", "fire_deadlines", "next_decision_at", "restore"]
