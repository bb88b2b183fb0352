"""Checkpoints of the program table: a pure export and restore of what survives a restart.

``export_program(core, program_id)`` turns one live program into a :class:`ProgramCheckpoint`
(plain values: placement, context, phase, lease, open tool calls, pause state, counters);
``export_globals(core)`` gives the rest (:class:`GlobalsCheckpoint`: backends, tool-time
estimates, counters, the core's time). The service persists these (``thunder_scheduler.
persistence``); :func:`restore` rebuilds a *fresh* core from them.

What a restore gives back:

* backends come back through ``BackendUpdated`` events with their last capacity, page size and
  health, so the live monitor's next report updates them the usual way (a backend found dead
  pauses or moves its programs, as it would have before the restart);
* every live program with its incarnation, metadata, lease, context and counters; an active
  program keeps its backend (its KV charge is rebuilt there), a paused one re-enters the
  waiting queue in its original wait order (``paused_since``, then creation order), so the
  policy restores paused programs in the order it would have;
* open tool calls with their expected ends, the acting weight and its switch deadline, and the
  per-tool duration estimates.

Rollout batches come back from their members' tags (live members only: a batch's ended count,
declared size, cut-off and cut list start afresh).

What it does not: requests in flight or held when the process died are gone (their clients'
connections died with it), so a restored program has none, and a program that was *marked* for
pause comes back unmarked (the next overflow check decides again).

Times: a checkpoint holds the core's times; ``restore(core, cp, now)`` shifts them all by
``now - cp.at``, so the time the service was down does not count (leases and waits resume
where they stopped). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from thunder_core.contract import ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.events import BackendUpdated
from thunder_scheduling.program_table import Program, ToolCall
from thunder_scheduling.scheduler import ProgramScheduler

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ToolCallCheckpoint:
    call_id: str
    tool_name: str
    started_at: float
    expected_end_at: float | None


@dataclass(frozen=True, slots=True)
class ProgramCheckpoint:
    program_id: str
    seq: int
    incarnation: int
    started_at: float
    last_event_at: float
    framework: str
    priority: int
    tags: dict[str, str]
    parent_program_id: str | None
    lease_s: float | None
    status: str
    phase: str
    backend: str | None
    context_tokens: int
    tokens_exact: bool
    shared_prefix_tokens: dict[str, int]
    responded_on: list[str]
    tools: list[ToolCallCheckpoint]
    acting_since: float | None
    weight_mode: str
    weight_switch_at: float | None
    weight_then: str
    prewarm_at_switch: bool
    ended_with_tool_call: bool
    paused_in_spell: bool
    paused_since: float | None
    pause_count: int
    paused_total_s: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    tool_calls: int
    service_tokens: int
    longest_pause_s: float = 0.0
    """Absent from checkpoints written before it existed: 0 then."""


@dataclass(frozen=True, slots=True)
class BackendCheckpoint:
    name: str
    healthy: bool
    capacity_tokens: int
    page_size_tokens: int


@dataclass(frozen=True, slots=True)
class GlobalsCheckpoint:
    at: float
    """The core's time when exported (every time in the checkpoint is on this clock)."""
    backends: list[BackendCheckpoint] = field(default_factory=list)
    tool_estimates: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Tool name -> (EWMA seconds, samples)."""
    counters: dict[str, float] = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION


def export_program(core: ProgramScheduler, program_id: str) -> ProgramCheckpoint | None:
    """The checkpoint of live program ``program_id``; None when it is not live."""
    p = core._table.get(program_id)
    if p is None:
        return None
    return ProgramCheckpoint(
        program_id=p.program_id, seq=p.seq, incarnation=p.incarnation,
        started_at=p.started_at, last_event_at=p.last_event_at, framework=p.framework,
        priority=p.priority, tags=dict(p.tags), parent_program_id=p.parent_program_id,
        lease_s=p.lease_s, status=p.status.value, phase=p.phase.value, backend=p.backend,
        context_tokens=p.context_tokens, tokens_exact=p.tokens_exact,
        shared_prefix_tokens=dict(p.shared_prefix_tokens),
        responded_on=sorted(p.responded_on),
        tools=[ToolCallCheckpoint(cid, t.tool_name, t.started_at, t.expected_end_at)
               for cid, t in p.tools.items()],
        acting_since=p.acting_since, weight_mode=p.weight_mode.value,
        weight_switch_at=p.weight_switch_at, weight_then=p.weight_then.value,
        prewarm_at_switch=p.prewarm_at_switch, ended_with_tool_call=p.ended_with_tool_call,
        paused_in_spell=p.paused_in_spell, paused_since=p.paused_since,
        pause_count=p.pause_count, paused_total_s=p.paused_total_s, requests=p.requests,
        prompt_tokens=p.prompt_tokens, completion_tokens=p.completion_tokens,
        cached_tokens=p.cached_tokens, tool_calls=p.tool_calls,
        service_tokens=p.service_tokens, longest_pause_s=p.longest_pause_s,
    )


def export_globals(core: ProgramScheduler) -> GlobalsCheckpoint:
    return GlobalsCheckpoint(
        at=core._now if math.isfinite(core._now) else 0.0,  # -inf: no event seen yet
        backends=[
            BackendCheckpoint(name, ledger.healthy, ledger.capacity_tokens,
                              ledger.page_size_tokens)
            for name, ledger in sorted(core._ledgers.items())
        ],
        tool_estimates=dict(core._tools.snapshot()),
        counters=dict(core.counters),
    )


def export_all(core: ProgramScheduler) -> tuple[GlobalsCheckpoint, list[ProgramCheckpoint]]:
    """Everything (tests and a full first write); the service normally exports what changed."""
    programs = [export_program(core, p.program_id) for p in core._table.live()]
    return export_globals(core), [p for p in programs if p is not None]


def _shift(value: float | None, by: float) -> float | None:
    return None if value is None else value + by


def restore(
    core: ProgramScheduler, globals_: GlobalsCheckpoint, programs: Iterable[ProgramCheckpoint],
    now: float,
) -> list[str]:
    """Rebuild a fresh core (no programs yet) from a checkpoint; return the restored ids.

    Programs whose backend is not among the checkpoint's backends come back paused and
    unplaced. Raises ``ValueError`` for a core that already has programs or a checkpoint of
    another version.
    """
    if globals_.version != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {globals_.version} (this core reads "
                         f"{CHECKPOINT_VERSION})")
    if len(core._table):
        raise ValueError("restore needs a core without programs")
    by = now - globals_.at if math.isfinite(globals_.at) else 0.0
    core._advance(now)
    for b in globals_.backends:
        core.handle(BackendUpdated(at=now, backend=b.name, healthy=b.healthy,
                                   capacity_tokens=b.capacity_tokens,
                                   page_size_tokens=b.page_size_tokens))
    for name, (mean_s, samples) in globals_.tool_estimates.items():
        core._tools.restore(name, mean_s, samples)
    for name, value in globals_.counters.items():
        core.counters[name] = value
    rows = sorted(programs, key=lambda c: c.seq)
    restored: list[Program] = []
    for c in rows:
        program = core._table.create(c.program_id, c.started_at + by)
        core._table.set_incarnation(program, c.incarnation)
        _fill(program, c, by)
        if c.backend is not None and c.backend not in core._ledgers:
            program.backend = None
            program.status = ProgramStatus.PAUSED
        core._rollouts.join(program.program_id, program.tags, now)
        restored.append(program)
    for program in restored:  # active first, so the ledgers hold their charges
        if program.status is ProgramStatus.ACTIVE:
            core._sync(program, now)
    waiting = sorted(
        (p for p in restored if p.status is ProgramStatus.PAUSED),
        key=lambda p: (p.paused_since if p.paused_since is not None else now, p.seq),
    )
    for program in waiting:
        since = program.paused_since if program.paused_since is not None else now
        if program.backend is not None and program.pause_count > 0:
            core._ledgers[program.backend].paused_here += 1
        program.paused_since = since
        core._waiting.add(program, core._restore_key(program), since)
        core._sync(program, now)
    for program in sorted(restored, key=lambda p: (p.last_event_at, p.seq)):
        core._touch(program, program.last_event_at)  # lease groups stay in time order
    core._room_changed = True
    core._flush()  # commands of the backend events: nothing to carry out on a fresh core
    return [p.program_id for p in restored]


def _fill(program: Program, c: ProgramCheckpoint, by: float) -> None:
    program.last_event_at = c.last_event_at + by
    program.framework = c.framework
    program.priority = c.priority
    program.tags = dict(c.tags)
    program.parent_program_id = c.parent_program_id
    program.lease_s = c.lease_s
    program.status = ProgramStatus(c.status)
    if program.status is ProgramStatus.TERMINATED:
        raise ValueError(f"checkpoint of {c.program_id!r} is of an ended program")
    program.phase = ProgramPhase(c.phase)
    program.backend = c.backend
    program.context_tokens = c.context_tokens
    program.tokens_exact = c.tokens_exact
    program.shared_prefix_tokens = dict(c.shared_prefix_tokens)
    program.responded_on = set(c.responded_on)
    program.tools = {t.call_id: ToolCall(t.tool_name, t.started_at + by,
                                         _shift(t.expected_end_at, by))
                     for t in c.tools}
    program.acting_since = _shift(c.acting_since, by)
    program.weight_mode = WeightMode(c.weight_mode)
    program.weight_switch_at = _shift(c.weight_switch_at, by)
    program.weight_then = WeightMode(c.weight_then)
    program.prewarm_at_switch = c.prewarm_at_switch
    program.ended_with_tool_call = c.ended_with_tool_call
    program.paused_in_spell = c.paused_in_spell
    program.paused_since = _shift(c.paused_since, by)
    program.pause_count = c.pause_count
    program.paused_total_s = c.paused_total_s
    program.requests = c.requests
    program.prompt_tokens = c.prompt_tokens
    program.completion_tokens = c.completion_tokens
    program.cached_tokens = c.cached_tokens
    program.tool_calls = c.tool_calls
    program.service_tokens = c.service_tokens
    program.longest_pause_s = c.longest_pause_s


__all__ = [
    "CHECKPOINT_VERSION",
    "BackendCheckpoint",
    "GlobalsCheckpoint",
    "ProgramCheckpoint",
    "ToolCallCheckpoint",
    "export_all",
    "export_globals",
    "export_program",
    "restore",
]
