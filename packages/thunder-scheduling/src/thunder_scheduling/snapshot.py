"""What the scheduler shows: plain frozen dataclasses, built on demand (not on the hot path).

``ProgramSnapshot`` fields match ``thunder_core.contract.ProgramView`` one for one (the HTTP
layer builds a ``ProgramView(**asdict(row))``-style object from it) plus a few scheduler
extras (``marked``, ``held_requests``, ``in_flight_requests``, ``incarnation``,
``charged_tokens``). ``BackendSnapshot`` and ``Counters`` feed ``/metrics`` and
``/ready``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from thunder_core.contract import ProgramEndStatus, ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import BackendLedger
from thunder_scheduling.program_table import Program, ProgramTable
from thunder_scheduling.tool_time import ToolTimeEstimator


@dataclass(frozen=True, slots=True)
class ProgramSnapshot:
    program_id: str
    status: ProgramStatus
    phase: ProgramPhase
    backend: str | None
    framework: str
    priority: int
    tags: dict[str, str]
    context_tokens: int
    tokens_exact: bool
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    tool_calls: int
    current_tool: str | None
    pause_count: int
    paused_s: float
    started_at: float
    last_event_at: float
    end_status: ProgramEndStatus | None
    runtime_ids: list[str] = field(default_factory=list)
    # scheduler extras
    incarnation: int = 0
    marked: bool = False
    held_requests: int = 0
    in_flight_requests: int = 0
    weighted_tokens: float = 0.0
    end_reason: str | None = None
    paused_since: float | None = None
    """Start of the current pause (None unless paused)."""
    longest_pause_s: float = 0.0
    """The longest pause so far, the current one included (the aging bound limits it)."""
    paused_share: float = 0.0
    """Share of its life (start to end, or to the snapshot) spent paused (fairness)."""


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    name: str
    healthy: bool
    capacity_tokens: int
    page_size_tokens: int
    active_tokens: float
    """Weighted (decayed) tokens of active programs plus the shared-prefix pool."""
    raw_active_tokens: int
    """The same without decay."""
    committed_tokens: float
    """``active_tokens`` without programs marked for pause (what the watermarks bound)."""
    reserved_tokens: int
    """Part charged from estimates (programs without exact usage yet)."""
    shared_prefix_tokens: int
    active_programs: int
    marked_programs: int
    paused_programs: int
    """Paused programs whose last backend is this one."""
    reported_used_tokens: int | None


@dataclass(frozen=True, slots=True)
class Counters:
    decisions: int = 0
    pauses: int = 0
    restores: int = 0
    migrations: int = 0
    forced_restores: int = 0
    held_requests: int = 0
    admitted_requests: int = 0
    lease_expiries: int = 0
    prewarms: int = 0
    marks: int = 0
    unmarks: int = 0
    programs_started: int = 0
    programs_ended: int = 0
    backend_flushes: int = 0
    """Backends whose KV cache was emptied (weight updates): ``BackendFlushed``."""
    rollout_cut_programs: int = 0
    """Programs a rollout batch's cut-off ended (``Release(reason="rollout_cut")``)."""
    max_paused_s: float = 0.0
    """Longest completed pause so far (seconds): compare with the aging bound."""


@dataclass(frozen=True, slots=True)
class SchedulerSnapshot:
    at: float
    policy: str
    programs: list[ProgramSnapshot]
    backends: list[BackendSnapshot]
    counters: Counters
    waiting_programs: int
    tool_estimates_s: dict[str, float]




def program_row(program: Program, now: float, weighted_tokens: float) -> ProgramSnapshot:
    return ProgramSnapshot(
        program_id=program.program_id,
        status=program.status,
        phase=program.phase,
        backend=program.backend,
        framework=program.framework,
        priority=program.priority,
        tags=dict(program.tags),
        context_tokens=program.context_tokens,
        tokens_exact=program.tokens_exact,
        requests=program.requests,
        prompt_tokens=program.prompt_tokens,
        completion_tokens=program.completion_tokens,
        cached_tokens=program.cached_tokens,
        tool_calls=program.tool_calls,
        current_tool=program.current_tool,
        pause_count=program.pause_count,
        paused_s=program.paused_s(now),
        started_at=program.started_at,
        last_event_at=program.last_event_at,
        end_status=program.end_status,
        incarnation=program.incarnation,
        marked=program.marked,
        held_requests=len(program.held),
        in_flight_requests=len(program.in_flight),
        weighted_tokens=weighted_tokens,
        end_reason=program.end_reason,
        paused_since=program.paused_since,
        longest_pause_s=program.longest_pause(now),
        paused_share=program.paused_share(now),
    )


def build_snapshot(
    *,
    at: float,
    policy: str,
    table: ProgramTable,
    ledgers: Mapping[str, BackendLedger],
    weight: Callable[[Program, float], float],
    counters: Mapping[str, float],
    waiting: int,
    tools: ToolTimeEstimator,
) -> SchedulerSnapshot:
    rows = [program_row(p, at, weight(p, at)) for p in table.ended()]
    rows += [program_row(p, at, weight(p, at)) for p in table.live()]
    backends = [
        BackendSnapshot(
            name=name,
            healthy=ledger.healthy,
            capacity_tokens=ledger.capacity_tokens,
            page_size_tokens=ledger.page_size_tokens,
            active_tokens=ledger.used_tokens(at),
            raw_active_tokens=ledger.raw_tokens(),
            committed_tokens=ledger.committed_tokens(at),
            reserved_tokens=ledger.estimated_tokens,
            shared_prefix_tokens=ledger.shared_pool_tokens,
            active_programs=len(ledger.charges),
            marked_programs=len(ledger.marked),
            paused_programs=ledger.paused_here,
            reported_used_tokens=ledger.reported_used_tokens,
        )
        for name, ledger in sorted(ledgers.items())
    ]
    known = {f.name for f in fields(Counters)}
    values: dict[str, Any] = {k: v for k, v in counters.items() if k in known}
    for name in ("max_paused_s",):
        values[name] = float(values.get(name, 0.0))
    for f in fields(Counters):
        if f.name in values and f.type in ("int", int):
            values[f.name] = int(values[f.name])
    return SchedulerSnapshot(
        at=at,
        policy=policy,
        programs=rows,
        backends=backends,
        counters=Counters(**values),
        waiting_programs=waiting,
        tool_estimates_s={name: est for name, (est, _n) in tools.snapshot().items()},
    )


__all__ = [
    "BackendSnapshot",
    "Counters",
    "ProgramSnapshot",
    "SchedulerSnapshot",
    "build_snapshot",
    "program_row",
]
