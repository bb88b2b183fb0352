"""The scheduler's state and the transitions that keep its indexes consistent.

``SchedulerState`` holds what ``ProgramScheduler`` (``scheduler.py``) knows: the program table,
one ledger and pause heap per backend, the waiting queue, deadline and lease indexes, tool-time
estimates and counters. Its methods are the state changes (admit, mark, pause, resume,
terminate, ...) and the bookkeeping that re-derives every index after a program changes
(``_sync``). The event handlers in ``scheduler.py`` and the passes in ``decisions.py`` call
them; nothing here decides anything.
"""

from __future__ import annotations

from thunder_core.contract import ProgramEndStatus, ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import (
    BackendLedger,
    Charge,
    WeightMode,
    ceil_to_page,
    decay_factor,
)
from thunder_scheduling.commands import (
    Admit,
    Command,
    Hold,
    Offload,
    Pause,
    Release,
    Resume,
    SetPriority,
)
from thunder_scheduling.config import SchedulerConfig
from thunder_scheduling.control import SchedulerControl
from thunder_scheduling.kv_tiers import KvTier, KvTiers
from thunder_scheduling.policy import Policy, PolicyView
from thunder_scheduling.program_table import Program, ProgramTable
from thunder_scheduling.queues import KeyedHeap, WaitingQueue
from thunder_scheduling.rollouts import RolloutBook, group_backend
from thunder_scheduling.tool_time import ToolTimeEstimator


class UnknownProgram(KeyError):
    """A lifecycle event names a program the scheduler does not know (HTTP 404)."""

    def __init__(self, program_id: str) -> None:
        super().__init__(program_id)
        self.program_id = program_id

    def __str__(self) -> str:
        return f"unknown program {self.program_id!r}"


class SchedulerState:
    """What ``ProgramScheduler`` knows, and the state changes the passes use."""

    def __init__(self, policy: Policy, config: SchedulerConfig) -> None:
        self.policy = policy
        self.config = config
        self._table = ProgramTable(config.keep_terminated)
        self._ledgers: dict[str, BackendLedger] = {}
        self._pause_heaps: dict[str, KeyedHeap] = {}
        self._in_pause_heap: dict[str, str] = {}
        self._waiting = WaitingQueue()
        self._deadlines = KeyedHeap()
        self._aging = KeyedHeap()
        """Waiting programs by the time aging forces them back (the policy's rule), ties in
        the order they began to wait."""
        self._wait_order: dict[str, int] = {}
        self._waits = 0
        self._leases: dict[float, dict[str, float]] = {}
        self._lease_of: dict[str, float] = {}
        self._tools = ToolTimeEstimator(config.tool_ewma_alpha)
        self._rollouts = RolloutBook(config.rollout_drain_fraction)
        self._tiers = KvTiers()
        self._now = float("-inf")
        self._out: list[Command] = []
        self._arrival_hold: tuple[int, Program, Hold] | None = None
        """The Hold of the request the current event held on arrival and where it goes in
        ``_out``, sent after the decision only if that did not admit it (``scheduler.py``)."""
        self._dirty: dict[str, None] = {}
        self._room_changed = False
        self._next_scan_at = float("-inf")
        self._control = SchedulerControl(self)
        self._views: dict[tuple[float, bool, bool], PolicyView] = {}
        self.counters: dict[str, float] = {}

    # -- state changes ------------------------------------------------------------------------

    def _create(self, program_id: str, now: float) -> Program:
        program = self._table.create(program_id, now)
        program.status = ProgramStatus.ACTIVE
        self._count("programs_started")
        return program

    def _enter_reasoning(self, program: Program) -> None:
        program.phase = ProgramPhase.REASONING
        program.ended_with_tool_call = False
        program.acting_since = None
        program.weight_mode = WeightMode.FULL
        program.weight_switch_at = None
        program.prewarm_at_switch = False
        program.paused_in_spell = False

    def _enter_acting(self, program: Program, now: float) -> None:
        if program.phase is not ProgramPhase.ACTING:
            program.phase = ProgramPhase.ACTING
            program.acting_since = now
            self._set_acting_weight(program, now)

    def _set_acting_weight(self, program: Program, now: float) -> None:
        weight = self.policy.acting_weight(program, self._view(now))
        if weight.tier is KvTier.HOST and program.backend is not None:
            was_host = program.kv_tier is KvTier.HOST
            self._to_host(program, program.backend, now)
            if program.kv_tier is KvTier.HOST and not was_host:  # the driver moves it
                self._out.append(
                    Offload(program.program_id, program.backend, program.context_tokens))
        elif weight.tier is KvTier.GONE:
            self._tiers.drop(program.program_id)
            program.kv_tier = KvTier.GONE
        elif program.kv_tier is KvTier.HOST and program.status is ProgramStatus.ACTIVE:
            assert program.backend is not None  # offloaded earlier in this spell: kept now
            self._tiers_gone(self._tiers.on_device(
                program.program_id, program.backend, program.context_tokens), now)
            program.kv_tier = KvTier.DEVICE
            self._dirty[program.backend] = None  # it weighs on the device again
        program.weight_mode = weight.mode
        program.weight_switch_at = weight.switch_at
        program.weight_then = weight.then
        program.prewarm_at_switch = weight.prewarm_at_switch
        if weight.switch_at is not None and weight.switch_at <= now:
            program.weight_mode = weight.then
            program.weight_switch_at = None

    def _touch(self, program: Program, now: float) -> None:
        """Record activity and re-file the program's lease (only while nothing is pending)."""
        program.last_event_at = now
        lease_s = program.lease_s if program.lease_s is not None else self.config.lease_s
        old = self._lease_of.pop(program.program_id, None)
        if old is not None:
            self._leases[old].pop(program.program_id, None)
        if not program.in_flight and not program.held:
            self._leases.setdefault(lease_s, {})[program.program_id] = now
            self._lease_of[program.program_id] = lease_s

    def _admit(self, program: Program, request_id: str) -> None:
        assert program.backend is not None
        program.in_flight[request_id] = None
        self._count("admitted_requests")
        self._tiers_gone(self._tiers.on_device(
            program.program_id, program.backend, program.context_tokens), self._now)
        program.kv_tier = KvTier.DEVICE
        self._out.append(
            Admit(program.program_id, request_id, program.backend, program.engine_priority)
        )

    def _mark(self, program: Program, now: float) -> None:
        assert program.backend is not None
        self._ledgers[program.backend].mark(program.program_id)
        program.marked = True
        self._count("marks")
        self._sync(program, now)

    def _unmark(self, program: Program, now: float) -> None:
        assert program.backend is not None
        self._ledgers[program.backend].unmark(program.program_id)
        program.marked = False
        self._count("unmarks")
        self._sync(program, now)
        for request_id in list(program.held):
            del program.held[request_id]
            self._admit(program, request_id)
        self._touch(program, now)

    def _pause(self, program: Program, now: float, reason: str) -> None:
        backend = program.backend
        assert backend is not None
        ledger = self._ledgers[backend]
        charge = ledger.charges.get(program.program_id)
        if charge is not None:
            ledger.remove(program.program_id)
        program.status = ProgramStatus.PAUSED
        program.marked = False
        program.pause_count += 1
        program.paused_in_spell = True
        ledger.paused_here += 1
        self._count("pauses")
        if reason == "overflow" and self.policy.pause_tier(
                program, self._view(now)) is KvTier.HOST:
            self._to_host(program, backend, now)
        else:
            self._tiers.drop(program.program_id)
            program.kv_tier = KvTier.GONE
        self._out.append(Pause(program.program_id, backend, program.context_tokens, reason,
                               kv_tier=program.kv_tier))
        self._enqueue(program, now)
        self._room_changed = True

    def _enqueue(self, program: Program, now: float) -> None:
        program.status = ProgramStatus.PAUSED
        program.paused_since = now
        self._waiting.add(program, self._restore_key(program), now)
        self._sync(program, now)

    def _resume(self, program: Program, backend: str, now: float) -> None:
        previous = program.backend
        was_paused = program.pause_count > 0 and previous is not None
        self._waiting.remove(program.program_id)
        self._aging.discard(program.program_id)
        self._wait_order.pop(program.program_id, None)
        waited = program.end_pause(now)
        if waited is not None and was_paused:
            self._count("max_paused_s", waited, maximum=True)
        program.status = ProgramStatus.ACTIVE
        program.backend = backend
        if program.kv_tier is not KvTier.GONE:
            self._tiers_gone(self._tiers.on_device(  # loaded back on its return
                program.program_id, backend, program.context_tokens), now)
            program.kv_tier = KvTier.DEVICE
        if previous is not None and was_paused:
            self._ledgers[previous].paused_here -= 1
            migrated = previous != backend
            self._count("restores")
            if migrated:
                self._count("migrations")
            self._out.append(Resume(program.program_id, backend, previous, migrated))
        self._sync(program, now)
        for request_id in list(program.held):
            del program.held[request_id]
            self._admit(program, request_id)
        self._touch(program, now)
        self._dirty[backend] = None

    def _terminate(
        self, program: Program, status: ProgramEndStatus, reason: str, now: float
    ) -> None:
        if program.status is ProgramStatus.ACTIVE and program.backend is not None:
            ledger = self._ledgers[program.backend]
            if program.program_id in ledger.charges:
                ledger.remove(program.program_id)
        elif program.status is ProgramStatus.PAUSED and program.paused_since is not None:
            program.end_pause(now)
            if program.backend is not None and program.pause_count > 0:
                self._ledgers[program.backend].paused_here -= 1
        self._waiting.remove(program.program_id)
        self._aging.discard(program.program_id)
        self._wait_order.pop(program.program_id, None)
        self._drop_from_pause_heap(program.program_id)
        self._deadlines.discard(program.program_id)
        lease = self._lease_of.pop(program.program_id, None)
        if lease is not None:
            self._leases[lease].pop(program.program_id, None)
        held = tuple(program.held)
        program.held.clear()
        program.in_flight.clear()
        program.status = ProgramStatus.TERMINATED
        program.marked = False
        program.end_status = status
        program.end_reason = reason
        program.ended_at = now
        program.last_event_at = now
        self._table.end(program)
        self._tiers.drop(program.program_id)
        program.kv_tier = KvTier.GONE
        draining = self._rollouts.ended(program.program_id)
        if draining is not None and self.policy.rollout_aware:
            for program_id in draining.live():  # once per batch: stragglers re-keyed
                self._sync(self._table_get(program_id), now)
        self._count("programs_ended")
        self._out.append(Release(program.program_id, program.backend, reason, held))
        self._room_changed = True
        if program.backend is not None:
            self._dirty[program.backend] = None

    def _to_host(self, program: Program, backend: str, now: float) -> None:
        """The program's KV goes to ``backend``'s host tier; programs pushed out are gone."""
        pushed = self._tiers.to_host(
            program.program_id, backend, ceil_to_page(
                program.context_tokens, self._ledgers[backend].page_size_tokens))
        program.kv_tier = self._tiers.tier(program.program_id)
        self._tiers_gone(pushed, now)

    def _tiers_gone(self, program_ids: list[str], now: float) -> None:
        for program_id in program_ids:
            other = self._table.get(program_id)
            if other is not None and other.kv_tier is not KvTier.GONE:
                other.kv_tier = KvTier.GONE
                if other.status is ProgramStatus.PAUSED:
                    self._sync(other, now)  # its restore key may read the tier

    # -- bookkeeping ----------------------------------------------------------------------------

    def _sync(self, program: Program, now: float) -> None:
        """Re-derive everything indexed on the program after it changed."""
        program.version += 1
        pid = program.program_id
        active_on = program.backend if program.status is ProgramStatus.ACTIVE else None
        if active_on is not None:
            ledger = self._ledgers[active_on]
            if pid in ledger.charges:
                ledger.remove(pid)
                if program.marked:
                    ledger.mark(pid)
            ledger.add(pid, self._charge(program, ledger))
        if active_on is not None and not program.marked and self.policy.pauses:
            key = self._pause_key(program)
            if key is not None:
                if self._in_pause_heap.get(pid) not in (None, active_on):
                    self._drop_from_pause_heap(pid)
                self._pause_heaps[active_on].push(program, key)
                self._in_pause_heap[pid] = active_on
            else:
                self._drop_from_pause_heap(pid)
        else:
            self._drop_from_pause_heap(pid)
        if program.status is ProgramStatus.PAUSED:
            self._waiting.rekey(program, self._restore_key(program))
            if pid in self._waiting and program.paused_since is not None:
                deadline = self.policy.aging_deadline(
                    program.started_at,
                    program.paused_since,
                    program.paused_total_s,
                    self.config.max_paused_s,
                )
                order = self._wait_order.get(pid)
                if order is None:
                    self._waits += 1
                    order = self._wait_order[pid] = self._waits
                self._aging.push(program, (deadline, order))
        if program.phase is ProgramPhase.ACTING and program.weight_switch_at is not None:
            self._deadlines.push(program, (program.weight_switch_at,))
        else:
            self._deadlines.discard(pid)
        priority = self._engine_priority(program, now)
        if priority != program.engine_priority:
            program.engine_priority = priority
            if priority is not None:
                self._out.append(SetPriority(pid, priority))

    def _restore_key(self, program: Program) -> tuple[float, ...]:
        """The policy's restore key; under a rollout-aware policy stragglers come first."""
        key = self.policy.restore_key(program)
        if not self.policy.rollout_aware:
            return key
        return (0 if self._rollouts.is_straggler(program.program_id) else 1, *key)

    def _pause_key(self, program: Program) -> tuple[float, ...] | None:
        """The policy's pause key; under a rollout-aware policy stragglers are paused last."""
        key = self.policy.pause_key(program)
        if key is None or not self.policy.rollout_aware:
            return key
        return (1 if self._rollouts.is_straggler(program.program_id) else 0, *key)

    def _engine_priority(self, program: Program, now: float) -> int | None:
        """The policy's engine priority; an active unmarked straggler gets the boost."""
        priority = self.policy.engine_priority(program, self._view(now))
        if (
            priority is not None
            and self.policy.rollout_aware
            and program.status is ProgramStatus.ACTIVE
            and not program.marked
            and self._rollouts.is_straggler(program.program_id)
        ):
            return priority + self.config.rollout_priority_boost
        return priority

    def _apply_weight_switch(self, program: Program, now: float) -> bool | None:
        if program.phase is not ProgramPhase.ACTING or program.weight_switch_at is None:
            return None
        program.weight_mode = program.weight_then
        program.weight_switch_at = None
        offloaded = program.kv_tier is KvTier.HOST
        prewarm = program.prewarm_at_switch and (program.paused_in_spell or offloaded)
        if prewarm and offloaded and program.status is ProgramStatus.ACTIVE:
            assert program.backend is not None
            self._tiers_gone(self._tiers.on_device(  # the prewarm loads it
                program.program_id, program.backend, program.context_tokens), now)
            program.kv_tier = KvTier.DEVICE
        self._sync(program, now)
        return prewarm

    def _drop_from_pause_heap(self, program_id: str) -> None:
        backend = self._in_pause_heap.pop(program_id, None)
        if backend is not None:
            self._pause_heaps[backend].discard(program_id)

    def _charge(self, program: Program, ledger: BackendLedger) -> Charge:
        shared = program.shared_prefix_tokens.get(ledger.name, 0)
        tokens = max(0, ceil_to_page(program.context_tokens, ledger.page_size_tokens) - shared)
        mode = WeightMode.FULL
        if program.phase is ProgramPhase.ACTING and not program.in_flight:
            mode = program.weight_mode
        since = program.acting_since if program.acting_since is not None else 0.0
        return Charge(tokens, mode, since, shared, not program.tokens_exact,
                      self._rollouts.prefix_group(program.program_id) if shared else "")

    def _weight_if_active(self, program: Program, ledger: BackendLedger, now: float) -> float:
        charge = self._charge(program, ledger)
        extra_shared = max(
            0, charge.shared_tokens - ledger.shared_prefix_of(charge.shared_group))
        if charge.mode is WeightMode.FULL:
            return float(charge.tokens + extra_shared)
        if charge.mode is WeightMode.NONE:
            return float(extra_shared)
        factor = decay_factor(now, charge.since, self.policy.acting_half_life_s)
        return charge.tokens * factor + extra_shared

    def _weight_of_active(self, program: Program, now: float) -> float:
        if program.status is not ProgramStatus.ACTIVE or program.backend is None:
            return 0.0
        ledger = self._ledgers[program.backend]
        charge = ledger.charges.get(program.program_id)
        return 0.0 if charge is None else ledger.weight(charge, now)

    def _view(self, now: float, restoring: bool = False, forced: bool = False) -> PolicyView:
        key = (now, restoring, forced)
        view = self._views.get(key)
        if view is None:
            if len(self._views) > 8:
                self._views.clear()
            view = PolicyView(
                now,
                self._ledgers,
                self._weight_if_active,
                self._tools.estimate_s,
                self._waiting.head,
                self._waiting.__len__,
                restoring=restoring,
                forced=forced,
                prewarm_lead_s=self.config.prewarm_lead_s,
                programs_on=self._control.programs_on,
                tiers=self._tiers,
            )
            self._views[key] = view
        return view

    def _place(
        self, program: Program, now: float, restoring: bool, forced: bool = False
    ) -> str | None:
        view = self._view(now, restoring, forced)
        backend = None
        if self.policy.rollout_aware and not forced and program.backend is None:
            backend = group_backend(
                self._rollouts, program, view, self.policy.low_watermark, self._table_get
            )
        if backend is None:
            backend = self.policy.place(program, view)
        if backend is None:
            return None
        self._check_backend(backend, program)
        return backend

    def _check_backend(self, backend: str, program: Program) -> None:
        ledger = self._ledgers.get(backend)
        if ledger is None or not ledger.healthy:
            raise ValueError(
                f"policy {self.policy.name!r} placed {program.program_id!r} on "
                f"{backend!r}, which is not a healthy backend"
            )

    def _require(self, program_id: str) -> Program:
        program = self._table.get(program_id)
        if program is None:
            raise UnknownProgram(program_id)
        return program

    def _table_get(self, program_id: str) -> Program:
        program = self._table.get(program_id)
        assert program is not None, program_id
        return program

    def _advance(self, at: float) -> float:
        self._now = max(self._now, at)
        return self._now

    def _count(self, name: str, amount: float = 1, maximum: bool = False) -> None:
        if maximum:
            self.counters[name] = max(self.counters.get(name, 0.0), amount)
        else:
            self.counters[name] = self.counters.get(name, 0) + amount

    def _flush(self) -> list[Command]:
        out, self._out = self._out, []
        return out


__all__ = ["SchedulerState", "UnknownProgram"]
