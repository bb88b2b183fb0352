"""ProgramScheduler: the pure, synchronous program-aware scheduling core.

Fed events (``events.py``) and a clock (``at`` on each event, ``now`` on ``tick``), it returns
commands (``commands.py``) and never does I/O; the same object runs in the live service and in
the simulator's virtual mode. This module holds what every policy shares: the event handlers,
held requests and marks, pause and resume, and the invariants; the passes run after each event
are in ``decisions.py``, and the policy only chooses (``policy.py``). The behaviour (state
machine, driver contract, accounting, overflow, restores, aging, leases) is specified in
docs/scheduling.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from thunder_core.contract import ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import BackendLedger, WeightMode
from thunder_scheduling.commands import Command, Hold
from thunder_scheduling.events import (
    BackendFlushed,
    BackendUpdated,
    CacheHintReceived,
    Event,
    ProgramEnded,
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    RolloutCut,
    RolloutStarted,
    ToolFinished,
    ToolStarted,
)
from thunder_scheduling.kv_tiers import KvTier
from thunder_scheduling.program_table import Program, ToolCall
from thunder_scheduling.prompt_split import SplitRoom
from thunder_scheduling.queues import KeyedHeap
from thunder_scheduling.rollouts import RolloutStatus, apply_cuts
from thunder_scheduling.snapshot import (
    ProgramSnapshot,
    SchedulerSnapshot,
    build_snapshot,
    program_row,
)
from thunder_scheduling.state import SchedulerState, UnknownProgram

DEFAULT_PROMPT_BLOCK_TOKENS = 64
"""Fingerprint block size for a policy that reads prompt blocks but names no size (the shared
traces' 64-token blocks)."""


class ProgramScheduler(SchedulerState):
    """The scheduling core: ``handle(event)`` and ``tick(now)`` return commands (state and
    transitions in ``state.py``, decision passes in ``decisions.py``)."""

    # -- public API -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        now = self._advance(event.at)
        self._count("decisions")
        match event:
            case BackendUpdated():
                self._on_backend(event, now)
            case BackendFlushed():
                self._on_backend_flushed(event, now)
            case ProgramStarted():
                self._on_program_started(event, now)
            case RequestArrived():
                self._on_request_arrived(event, now)
            case RequestFinished():
                if self.policy.routes_requests:
                    self.policy.request_finished(event.program_id, event.request_id)
                self._on_request_finished(event, now)
            case ToolStarted():
                self._on_tool_started(event, now)
            case ToolFinished():
                self._on_tool_finished(event, now)
            case ProgramEnded():
                program = self._require(event.program_id)
                self._terminate(program, event.status, event.reason or "ended", now)
            case CacheHintReceived(kind="back_in", seconds=float() as seconds):
                self._on_back_in(event.program_id, seconds, now)
            case RolloutStarted():
                self._rollouts.open(event.rollout, now, event.size, event.cut_fraction)
            case RolloutCut():
                self._rollouts.request_cut(event.rollout)
        self._decide(now)
        self._hold_if_still_held()
        return self._flush()

    def _hold_if_still_held(self) -> None:
        """The Hold of a request held on arrival, sent only if the same decision did not admit
        it (a new program that joined the queue can be placed by the restore pass that
        follows): every arrival gets exactly one answer in its own call, in the place of the
        command list where it was held."""
        pending, self._arrival_hold = self._arrival_hold, None
        if pending is None:
            return
        at, program, hold = pending
        if hold.request_id in program.held:
            self._count("held_requests")
            self._out.insert(at, hold)

    def tick(self, now: float) -> list[Command]:
        now = self._advance(now)
        self._count("decisions")
        self._room_changed = True
        self._decide(now)
        return self._flush()

    def next_deadline(self) -> float | None:
        candidates: list[float] = []
        entry = self._deadlines.pop_valid()
        if entry is not None:
            self._deadlines.push_back([entry])
            candidates.append(entry[0][0])
        for lease_s, group in self._leases.items():
            for last in group.values():
                candidates.append(last + lease_s)
                break
        policy_at = self.policy.next_decision_at(self._control, self._now)
        if policy_at is not None:
            candidates.append(policy_at)
        return min(candidates) if candidates else None

    def snapshot(self) -> SchedulerSnapshot:
        return build_snapshot(
            at=self._now,
            policy=self.policy.name,
            table=self._table,
            ledgers=self._ledgers,
            weight=self._weight_of_active,
            counters=self.counters,
            waiting=len(self._waiting),
            tools=self._tools,
        )

    @property
    def prompt_block_tokens(self) -> int | None:
        """Block size of the prompt fingerprint (``RequestArrived.prompt_blocks``) the policy
        reads; None when it reads none (callers then send ``()`` and skip the hashing)."""
        if not self.policy.reads_prompt_blocks:
            return None
        size = getattr(getattr(self.policy, "config", None), "block_tokens", None)
        return size if isinstance(size, int) and size > 0 else DEFAULT_PROMPT_BLOCK_TOKENS

    def program_snapshot(self, program_id: str) -> ProgramSnapshot | None:
        """One row of ``snapshot()``: the newest incarnation of ``program_id`` (live, else
        recently ended), without building the whole snapshot; None when not known."""
        program = self._table.newest(program_id)
        if program is None:
            return None
        return program_row(program, self._now, self._weight_of_active(program, self._now))

    def split_room(self, program_id: str, now: float,
                   tool_names: Iterable[str] = ()) -> SplitRoom | None:
        """The room for ``program_id``'s prompt split on its backend at ``now``
        (``prompt_split.py``):
        ``tool_names`` are the calls its last response holds, for the tool-time estimate when
        no ``ToolStarted`` came yet. None when it is not live, not active or has no backend.
        O(programs on the backend)."""
        program = self._table.get(program_id)
        if program is None or program.status is not ProgramStatus.ACTIVE \
                or program.backend is None:
            return None
        now = max(now, self._now)
        ledger = self._ledgers[program.backend]
        expected: float | None = None
        if program.tools:
            end = program.expected_tool_end_at()
            expected = None if end is None else max(0.0, end - now)
        else:
            estimates = [self._tools.estimate_s(name) for name in tool_names]
            if estimates and all(e is not None for e in estimates):
                expected = max(e for e in estimates if e is not None)
        keep = math.inf
        if program.weight_mode is WeightMode.NONE:
            keep = 0.0
        elif program.weight_mode is WeightMode.DECAYING:
            half_life = self.policy.acting_half_life_s
            since = program.acting_since if program.acting_since is not None else now
            keep = math.inf if half_life is None else max(0.0, since + half_life - now)
        return SplitRoom(program.backend, float(ledger.capacity_tokens - ledger.raw_tokens()),
                         expected, keep)

    def rollout(self, rollout: str) -> RolloutStatus | None:
        """A rollout batch's progress and the programs its cut-off ended (``None``: unknown)."""
        return self._rollouts.status(rollout)

    def kv_tier(self, program_id: str) -> KvTier:
        """Where the core believes the program's KV is (``kv_tiers.py``); an unknown or ended
        program's is gone."""
        return self._tiers.tier(program_id)

    def host_used_tokens(self, backend: str) -> int:
        """Tokens of programs the core believes held in ``backend``'s host tier."""
        return self._tiers.host_used(backend)

    def has_program(self, program_id: str) -> bool:
        return self._table.get(program_id) is not None

    def route_untagged(self, at: float) -> str | None:
        now = self._advance(at)
        best: str | None = None
        best_free = 0.0
        for name, ledger in sorted(self._ledgers.items()):
            if not ledger.healthy or ledger.capacity_tokens <= 0:
                continue
            free = ledger.capacity_tokens - ledger.used_tokens(now)
            if best is None or free > best_free:
                best, best_free = name, free
        return best

    # -- events -----------------------------------------------------------------------------

    def _on_backend(self, ev: BackendUpdated, now: float) -> None:
        ledger = self._ledgers.get(ev.backend)
        if ledger is None:
            ledger = BackendLedger(ev.backend, self.policy.acting_half_life_s)
            self._ledgers[ev.backend] = ledger
            self._pause_heaps[ev.backend] = KeyedHeap()
        if ev.capacity_tokens < 0 or ev.page_size_tokens < 1:
            raise ValueError(
                f"backend {ev.backend!r}: capacity_tokens must be >= 0 and page_size_tokens >= 1"
            )
        if ev.host_capacity_tokens < 0:
            raise ValueError(f"backend {ev.backend!r}: host_capacity_tokens must be >= 0")
        rate = ev.host_load_tokens_per_s
        if rate is not None and not rate > 0:
            raise ValueError(f"backend {ev.backend!r}: host_load_tokens_per_s must be > 0")
        was_healthy = ledger.healthy
        page_changed = ledger.page_size_tokens != ev.page_size_tokens
        if ev.capacity_tokens > ledger.capacity_tokens or (ev.healthy and not was_healthy):
            self._room_changed = True
        ledger.capacity_tokens = ev.capacity_tokens
        ledger.page_size_tokens = ev.page_size_tokens
        ledger.reported_used_tokens = ev.used_tokens
        ledger.host_capacity_tokens = ev.host_capacity_tokens
        ledger.host_load_tokens_per_s = ev.host_load_tokens_per_s
        self._tiers_gone(self._tiers.configure(
            ev.backend, ev.host_capacity_tokens, ev.host_load_tokens_per_s
        ), now)
        ledger.healthy = ev.healthy
        if page_changed:
            for program_id in list(ledger.charges):
                self._sync(self._table_get(program_id), now)
        if was_healthy and not ev.healthy:
            for program_id in list(ledger.charges):
                program = self._table_get(program_id)
                if program.in_flight:
                    if not program.marked:
                        self._mark(program, now)
                else:
                    self._pause(program, now, reason="backend_unhealthy")
        self._dirty[ev.backend] = None

    def _on_backend_flushed(self, ev: BackendFlushed, now: float) -> None:
        """Forget every cached-prefix assumption about ``ev.backend``: the shared prefix a
        program was charged once for, and "has answered there" (so the next response's cached
        tokens are read afresh); the policy forgets its own (``backend_flushed``). Programs keep
        their placement and state; a charged one is re-charged without the shared part. Rare
        (once per weight update), so one scan of the table is fine."""
        if ev.backend not in self._ledgers:
            raise ValueError(f"unknown backend {ev.backend!r}")
        ledger = self._ledgers[ev.backend]
        for program in self._table.live():
            program.shared_prefix_tokens.pop(ev.backend, None)
            program.responded_on.discard(ev.backend)
        for program_id in list(ledger.charges):
            self._sync(self._table_get(program_id), now)
        self._tiers_gone(self._tiers.flushed(ev.backend), now)
        self.policy.backend_flushed(ev.backend)
        self._count("backend_flushes")
        self._dirty[ev.backend] = None
        self._room_changed = True

    def _on_program_started(self, ev: ProgramStarted, now: float) -> None:
        program = self._table.get(ev.program_id)
        if program is None:
            program = self._create(ev.program_id, now)
        program.framework = ev.framework
        program.priority = ev.priority
        program.tags = dict(ev.tags)
        program.parent_program_id = ev.parent_program_id
        program.lease_s = ev.lease_s
        self._rollouts.join(program.program_id, program.tags, now)
        self._touch(program, now)
        self._sync(program, now)

    def _on_request_arrived(self, ev: RequestArrived, now: float) -> None:
        program = self._table.get(ev.program_id)
        if program is None:
            program = self._create(ev.program_id, now)
        if ev.request_id in program.in_flight or ev.request_id in program.held:
            raise ValueError(f"request {ev.request_id!r} of {ev.program_id!r} already arrived")
        program.requests += 1
        if ev.prompt_tokens_estimate > program.context_tokens:
            program.context_tokens = ev.prompt_tokens_estimate
            program.tokens_exact = False
        self._enter_reasoning(program)
        if (
            self.policy.routes_requests
            and program.status is ProgramStatus.ACTIVE
            and not program.marked
        ):
            self._route(program, ev, now)
        if program.status is ProgramStatus.ACTIVE and program.backend is None:
            if self.policy.arrivals_join_queue and len(self._waiting) > 0:
                backend = None
                self._room_changed = True  # a restore pass now places it in restore order
            else:
                backend = self._place(program, now, restoring=False)
            if backend is None:
                self._enqueue(program, now)
            else:
                program.backend = backend
        if program.status is ProgramStatus.ACTIVE and not program.marked:
            self._sync(program, now)
            self._admit(program, ev.request_id)
        else:
            program.held[ev.request_id] = now
            reason = "pausing" if program.marked else "paused"
            self._arrival_hold = (
                len(self._out), program, Hold(program.program_id, ev.request_id, reason))
            self._sync(program, now)
        self._touch(program, now)
        if program.backend is not None:
            self._dirty[program.backend] = None

    def _route(self, program: Program, ev: RequestArrived, now: float) -> None:
        """Request-level routing (gateway baselines): the program's charge follows the
        request to the backend the policy picks; ``None`` leaves placement to ``place``."""
        backend = self.policy.route_request(program, ev, self._view(now))
        if backend is None:
            return
        self._check_backend(backend, program)
        previous = program.backend
        if previous == backend:
            return
        if previous is not None:
            ledger = self._ledgers[previous]
            if program.program_id in ledger.charges:
                ledger.remove(program.program_id)
                self._dirty[previous] = None
                self._room_changed = True
            self._drop_from_pause_heap(program.program_id)
        program.backend = backend

    def _on_request_finished(self, ev: RequestFinished, now: float) -> None:
        program = self._table.get(ev.program_id)
        if program is None:
            return  # ended or released before the response: nothing left to account
        if ev.request_id in program.held:
            del program.held[ev.request_id]
            self._touch(program, now)
            return
        if ev.request_id not in program.in_flight:
            return  # duplicate report
        del program.in_flight[ev.request_id]
        prompt, completion = ev.prompt_tokens, ev.completion_tokens
        cached = ev.cached_tokens or 0
        program.prompt_tokens += prompt or 0
        program.completion_tokens += completion or 0
        program.cached_tokens += cached
        program.service_tokens += (completion or 0) + max(0, (prompt or 0) - cached)
        backend = program.backend
        if prompt is not None and completion is not None:
            program.context_tokens = prompt + completion
            program.tokens_exact = True
            if backend is not None and backend not in program.responded_on:
                program.responded_on.add(backend)
                page = self._ledgers[backend].page_size_tokens
                shared = (min(cached, prompt) // page) * page
                if shared:
                    program.shared_prefix_tokens[backend] = shared
        elif ev.outcome.value == "ok":
            program.tokens_exact = False
        program.ended_with_tool_call = ev.ends_with_tool_call
        if not program.in_flight:
            self._enter_acting(program, now)
            if program.marked and program.status is ProgramStatus.ACTIVE:
                self._pause(program, now, reason="overflow")
        self._touch(program, now)
        self._sync(program, now)
        if backend is not None:
            self._dirty[backend] = None
        self._room_changed = True

    def _on_tool_started(self, ev: ToolStarted, now: float) -> None:
        program = self._require(ev.program_id)
        expected = ev.expected_duration_s
        if expected is None:
            expected = self._tools.estimate_s(ev.tool_name)
        program.tools[ev.call_id] = ToolCall(
            ev.tool_name, now, None if expected is None else now + expected
        )
        program.tool_calls += 1
        if not program.in_flight:
            self._enter_acting(program, now)
            self._set_acting_weight(program, now)
        self._touch(program, now)
        self._sync(program, now)

    def _on_back_in(self, program_id: str, seconds: float, now: float) -> None:
        """A ``back_in`` hint: the running tool calls are expected to end in ``seconds``.
        (Other hints are not read by the core yet.)"""
        program = self._require(program_id)
        if not program.tools:
            return
        for call in program.tools.values():
            call.expected_end_at = now + seconds
        if program.phase is ProgramPhase.ACTING:
            self._set_acting_weight(program, now)
        self._sync(program, now)

    def _on_tool_finished(self, ev: ToolFinished, now: float) -> None:
        program = self._require(ev.program_id)
        call = program.tools.pop(ev.call_id, None)
        if call is not None:
            self._tools.observe(call.tool_name, now - call.started_at)
        if not program.tools and not program.in_flight:
            self._enter_reasoning(program)
        elif program.phase is ProgramPhase.ACTING:
            self._set_acting_weight(program, now)
        self._touch(program, now)
        self._sync(program, now)
        if program.backend is not None:
            self._dirty[program.backend] = None

    # -- decisions --------------------------------------------------------------------------------

    def _decide(self, now: float) -> None:
        apply_cuts(self._control, now)
        self.policy.decide(self._control, now)


__all__ = ["ProgramScheduler", "UnknownProgram"]
