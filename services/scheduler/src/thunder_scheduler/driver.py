"""The async driver around the pure scheduling core: events in, commands carried out.

The core (``thunder_scheduling``) is synchronous and does no I/O; the driver owns it and
everything with side effects, on one event loop:

* **Time.** Events are stamped with ``Clock.now()`` (modelled seconds). A ticker calls
  ``core.tick(now)`` at ``core.next_deadline()`` or after ``tick_s`` (the backstop); an event
  wakes it so a deadline moved earlier is honoured.
* **Held requests.** ``arrive()`` registers the request's future before feeding the event, so
  an ``Admit`` returned at once or later resolves it the same way; ``Release`` fails the
  program's pending futures with 409; a waiter that gives up removes its future.
* **Commands.** ``Admit`` resolves the future; ``SetPriority`` sets the priority of the
  program's later requests; ``Pause`` / ``Resume`` / ``Prewarm`` / ``Release`` go to the engine
  levers of the backend's kind (``levers/``), whose I/O runs in the background, best effort.
* **Per-program state** is one record per program (``programs.py``; plus what the levers
  keep), removed by its ``Release`` in one call; ``tracked()`` says what is held.
* **Tool manager** (``hooks``): told when programs queue for a runtime spec, are first
  admitted, resume and end (``tool_hooks.py``).

Decision latency (wall time of each ``handle`` / ``tick``) goes to the metrics histogram.

Why this file is a little over 400 lines: it is one concept, the loop that feeds events and
applies commands; every piece with state of its own already lives beside it (``programs``,
``held``, ``prefills``, ``tool_hooks``, ``background``, ``levers/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from thunder_core.contract import (
    RUNTIME_SPEC_TAG,
    Framework,
    HintKind,
    ProgramEndStatus,
    ProgramStatus,
    ProgramView,
)
from thunder_scheduler.backends.base import Backend
from thunder_scheduler.backends.monitor import BackendState
from thunder_scheduler.background import BackgroundTasks
from thunder_scheduler.clock import Clock
from thunder_scheduler.gate import GateError
from thunder_scheduler.held import HeldRequests
from thunder_scheduler.levers import (
    LEVER_TIMEOUT_S,
    EngineHints,
    EngineLevers,
    LeverContext,
    make_levers,
)
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduler.prefills import EnginePrefills
from thunder_scheduler.programs import ProgramRecord, ProgramRecords
from thunder_scheduler.tool_hooks import ProgramHooks, ToolHooks
from thunder_scheduling.commands import (
    Admit,
    Command,
    Hold,
    Offload,
    Pause,
    Prewarm,
    Release,
    Resume,
    SetPriority,
)
from thunder_scheduling.events import (
    BackendUpdated,
    Event,
    ProgramEnded,
    ProgramStarted,
    ToolFinished,
    ToolStarted,
)
from thunder_scheduling.interface import SchedulingCore
from thunder_scheduling.kv_tiers import KvTier
from thunder_scheduling.prompt_split import SplitRoom
from thunder_scheduling.rollouts import CUT_REASON as ROLLOUT_CUT_REASON

__all__ = ["Driver", "ProgramHooks", "ProgramRecord"]

log = logging.getLogger(__name__)

def kv_place(command: Pause) -> KvTier:
    """Where the core put a paused program's KV: nowhere when its backend went away (and no
    engine lever is called: the engine is not there to answer), else the core's choice; a
    policy that does not choose gets the host tier where the engine has one (the levers do
    nothing where it has none)."""
    if command.reason == "backend_unhealthy":
        return KvTier.GONE
    return KvTier(command.kv_tier) if command.kv_tier is not None else KvTier.HOST


class Driver:
    """Runs one ``SchedulingCore`` on the event loop (see the module docstring)."""

    def __init__(
        self,
        core: SchedulingCore,
        backends: Mapping[str, Backend],
        clock: Clock,
        metrics: ServiceMetrics,
        *,
        tick_s: float = 1.0,
        prewarm_http: httpx.AsyncClient | None = None,
        prewarm_bodies_max: int = 4096,
        slot_offload: bool = False,
        hooks: ProgramHooks | None = None,
        total_slots: Callable[[str], int | None] | None = None,
        prompt_split: bool = True,
    ) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.core = core
        self.backends = dict(backends)
        self.clock = clock
        self.metrics = metrics
        self.tick_s = tick_s
        self._background = BackgroundTasks(metrics, LEVER_TIMEOUT_S)
        self.hooks = hooks
        """The tool manager's hooks (may be set after construction: it needs the driver)."""
        self._tools = ToolHooks(lambda: self.hooks, self._background.spawn)
        self.levers = make_levers(LeverContext(
            backends=self.backends, spawn=self._background.spawn, metrics=metrics,
            program_exists=core.has_program, http=prewarm_http, slot_offload=slot_offload,
            total_slots=total_slots or (lambda name: None),
        ))
        self.programs = ProgramRecords(prewarm_bodies_max)
        self._held = HeldRequests()
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self.prompt_split_enabled = prompt_split and prewarm_http is not None
        """Prefill a tool-call response's next prefix while the tool runs (``prompt_split``)."""
        self._prefills = EnginePrefills(
            self.programs, self.backends, self._levers, metrics,
            lambda: self.prompt_split_enabled,
            self._split_room,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._ticker is not None:
            raise RuntimeError("driver already started")
        self._ticker = asyncio.create_task(self._tick_loop(), name="scheduler-ticker")

    async def aclose(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        self._held.fail_all(GateError(503, "scheduler shutting down"))
        await self._background.aclose()

    # -- per-program state ---------------------------------------------------------------------

    def tracked(self) -> dict[str, int]:
        """How many entries each per-program structure holds (all 0 once every program has
        ended, except the bounded ``ended_runtime_ids``)."""
        sizes = {
            **self.programs.tracked(),
            **self._held.tracked(),
            "spec_queues": self._tools.tracked(),
            "background_tasks": len(self._background),
        }
        for kind, levers in self.levers.items():
            sizes[f"levers.{kind.value}"] = levers.tracked_programs()
        return sizes

    # -- feeding the core -----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def feed(self, event: Event) -> list[Command]:
        """Feed one event and carry out the commands; raises what the core raises."""
        is_new = isinstance(event, ProgramStarted) and not self.core.has_program(event.program_id)
        started = time.perf_counter()
        try:
            commands = self.core.handle(event)
        finally:
            self.metrics.decision.observe(time.perf_counter() - started)
        match event:
            case ProgramStarted():
                if self.core.has_program(event.program_id):  # started, or adopted anew
                    self.programs.ensure(event.program_id).framework = event.framework
                    if is_new:
                        self.metrics.program_started(event.framework)
                self._tools.started(event.program_id, self.programs.ensure(event.program_id),
                                    event.tags.get(RUNTIME_SPEC_TAG))
            case ProgramEnded():
                record = self.programs.get(event.program_id)
                if record is not None and record.framework is not None:
                    record.end_status = event.status.value
            case ToolStarted():
                self.programs.ensure(event.program_id).tool_calls.add(event.call_id)
                for runtime_id in event.runtime_ids:
                    self.note_runtime(event.program_id, runtime_id)
            case ToolFinished():
                record = self.programs.get(event.program_id)
                if record is not None:
                    record.tool_calls.discard(event.call_id)
            case _:
                pass
        self._execute(commands)
        self._wake.set()
        return commands

    def has_tool_call(self, program_id: str, call_id: str) -> bool:
        """Whether ``call_id`` of ``program_id`` started and has not ended."""
        record = self.programs.get(program_id)
        return record is not None and call_id in record.tool_calls

    def tick(self) -> list[Command]:
        """Run the core's tick now (the ticker does this on its own; tests call it too)."""
        started = time.perf_counter()
        commands = self.core.tick(self.clock.now())
        self.metrics.decision.observe(time.perf_counter() - started)
        self._execute(commands)
        return commands

    def arrive(self, program_id: str, request_id: str, event: Event) -> asyncio.Future[Admit]:
        """Feed a ``RequestArrived`` and return the future its ``Admit`` resolves."""
        future = self._held.add(program_id, request_id)
        try:
            self.feed(event)
        except BaseException:
            self._held.drop(request_id)
            raise
        self._update_held()
        return future

    def forget(self, request_id: str) -> None:
        """The waiter for ``request_id`` left (admitted, failed or its client went away)."""
        future = self._held.drop(request_id)
        if future is not None and not future.done():
            future.cancel()
        self._update_held()

    def next_request_seq(self, program_id: str) -> int:
        record = self.programs.ensure(program_id)
        record.seq += 1
        return record.seq

    def drop_unstarted(self, program_id: str) -> None:
        """A request of a program the core does not know was refused before it was fed:
        drop the record its request id created (nothing would ever release it)."""
        if not self.core.has_program(program_id):
            self.programs.remove(program_id)

    def priority_of(self, program_id: str) -> int | None:
        record = self.programs.get(program_id)
        return record.priority if record is not None else None

    def _levers(self, backend: Backend) -> EngineLevers:
        return self.levers[backend.kind]

    def slot_of(self, program_id: str, backend: str) -> int | None:
        found = self.backends.get(backend)
        return self._levers(found).hints(program_id, found).slot_id if found else None

    async def engine_hints(self, program_id: str, backend: Backend) -> EngineHints:
        """The engine state a request of the program carries there (an SGLang session is
        opened first when it needs one)."""
        return await self._levers(backend).prepare(program_id, backend)

    def remember_body(self, program_id: str, path: str, body: Mapping[str, Any]) -> None:
        """Keep the program's last request for a pre-restore warm-up (bounded LRU)."""
        self.programs.remember_body(program_id, path, body)

    # -- program views ----------------------------------------------------------------------------

    def program_views(self) -> list[ProgramView]:
        """Every program the core shows (live and recently ended), as the contract's view."""
        return self.programs.views(self.core.snapshot())

    def note_runtime(self, program_id: str, runtime_id: str) -> None:
        """``runtime_id`` belongs to ``program_id`` (acquired, or named in a tool start);
        ignored once the program ended (its record is gone and must not come back)."""
        if self.core.has_program(program_id):
            self.programs.note_runtime(program_id, runtime_id)

    def runtime_ids(self, program_id: str) -> list[str]:
        """The runtimes a live or recently ended program acquired or named."""
        return self.programs.runtime_ids(program_id)

    def program_view(self, program_id: str) -> ProgramView | None:
        """The newest incarnation of ``program_id``, or None when the core never saw it."""
        one = getattr(self.core, "program_snapshot", None)  # O(1); a scripted core may lack it
        if one is None:
            found = self.programs.views(self.core.snapshot(), program_id)
            return found[0] if found else None
        row = one(program_id)
        return self.programs.view(row) if row is not None else None

    def live_program_ids(self) -> set[str]:
        """Programs that have not ended (the tool manager's view of who may hold runtimes)."""
        return {
            row.program_id for row in self.core.snapshot().programs
            if row.status != ProgramStatus.TERMINATED
        }

    def held_count(self) -> int:
        return self._held.pending()

    def queued_programs(self, spec: str) -> int:
        """Programs started for ``spec`` whose first request the core has not admitted yet."""
        return self._tools.queued(spec)

    async def on_backend_change(self, name: str, state: BackendState) -> None:
        """Backend monitor subscriber: feed ``BackendUpdated``."""
        info = state.info
        used = state.load.used_tokens if state.load is not None else None
        self.feed(BackendUpdated(
            at=self.clock.now(),
            backend=name,
            healthy=state.healthy and info is not None,
            capacity_tokens=info.capacity_tokens if info is not None else 0,
            page_size_tokens=info.page_size_tokens if info is not None else 1,
            used_tokens=used,
            host_capacity_tokens=info.host_capacity_tokens if info is not None else 0,
        ))

    # -- the ticker ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            now = self.clock.now()
            deadline = self.core.next_deadline()
            backstop = now + self.tick_s
            target = backstop if deadline is None else min(deadline, backstop)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self.clock.wall_seconds(target - now)
                )
                continue  # an event may have moved the deadline: recompute it
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")

    # -- commands ----------------------------------------------------------------------------------

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            try:
                self._apply(command)
            except Exception:
                log.exception("applying %r failed", command)

    def _apply(self, command: Command) -> None:
        match command:
            case Admit():
                self._admit(command)
            case Hold():
                log.debug("holding %s (%s)", command.request_id, command.reason)
            case SetPriority():
                self.programs.ensure(command.program_id).priority = command.priority
            case Pause():
                self.metrics.pauses.inc()
                record = self.programs.get(command.program_id)
                if record is not None:
                    record.paused, record.split_keys = True, frozenset()
                backend = self.backends.get(command.backend)
                place = kv_place(command)
                self.metrics.paused_kv.labels(place.value).inc()
                if backend is not None and command.reason != "backend_unhealthy":
                    self._levers(backend).paused(command.program_id, backend, place)
            case Offload():
                backend = self.backends.get(command.backend)
                if backend is not None:
                    self._levers(backend).paused(command.program_id, backend, KvTier.HOST)
            case Resume():
                self.metrics.restores.inc()
                if command.migrated:
                    self.metrics.migrations.inc()
                self._resume(command)
            case Prewarm():
                self._prewarm(command.program_id, command.backend)
            case Release():
                self._release(command)

    def _admit(self, command: Admit) -> None:
        pid = command.program_id
        record = self.programs.ensure(pid)
        self._tools.admitted(pid, record)
        record.backend = command.backend
        if command.priority is not None:
            record.priority = command.priority
        backend = self.backends.get(command.backend)
        if backend is not None:
            self._levers(backend).admitted(pid, backend)
        if record.shared_prefix is not None:
            self._prefills.warm_shared_prefix(pid)
        self._held.admit(command)
        self._update_held()

    def _resume(self, command: Resume) -> None:
        record = self.programs.get(command.program_id)
        if record is not None:
            record.paused = False
        self._tools.call("on_program_restoring", command.program_id)
        backend = self.backends.get(command.backend)
        if backend is None:
            return
        for levers in self.levers.values():  # a migration leaves state on the old kind too
            levers.resumed(command.program_id, backend)

    def hinted(self, program_id: str, kind: str, prefix_id: str | None = None) -> None:
        """The engine levers of a cache hint the core was just fed (docs/cache-hints.md):
        ``shared_prefix`` warms the prefix at the top priority, ``context_compacted`` forgets
        what a warm-up would re-send; ``back_in`` acts through the core (expected tool end:
        pre-restore, the split's rule)."""
        if kind == HintKind.SHARED_PREFIX and prefix_id is not None:
            self._prefills.shared_prefix(program_id, prefix_id)
        elif kind == HintKind.CONTEXT_COMPACTED:
            self._prefills.context_compacted(program_id)

    def _split_room(self, program_id: str, tool_names: Iterable[str]) -> SplitRoom | None:
        room_of = getattr(self.core, "split_room", None)  # a scripted core may lack it
        if room_of is None:
            return None
        room: SplitRoom | None = room_of(program_id, self.clock.now(), tool_names)
        return room

    def _prewarm(self, program_id: str, backend_name: str) -> None:
        backend = self.backends.get(backend_name)
        if backend is not None and self._levers(backend).load_back(program_id, backend):
            return  # the engine loads the offloaded KV back itself (llama.cpp slot restore)
        self._prefills.prewarm(program_id, backend_name)

    def prompt_split(self, program_id: str, prefix: Mapping[str, Any],
                     uncached_tokens: int = 0) -> None:
        """A response of ``program_id`` ended in tool calls; ``prefix`` is its next prompt's
        known prefix (see ``prefills.EnginePrefills.prompt_split``)."""
        self._prefills.prompt_split(program_id, prefix, uncached_tokens)

    def _release(self, command: Release) -> None:
        pid = command.program_id
        record = self.programs.remove(pid)
        status = record.end_status or ProgramEndStatus.OK.value
        if "lease" in command.reason:
            self.metrics.lease_expiries.inc()
            status = "lease_expired"
        elif command.reason == ROLLOUT_CUT_REASON:
            status = ProgramEndStatus.CANCELLED.value
        self.metrics.program_ended(record.framework or Framework.OTHER.value, status)
        self._held.fail_program(pid, GateError(409, f"program {pid!r} was released "
                                                    f"({command.reason})"))
        self._update_held()
        backend_name = command.backend or record.backend
        backend = self.backends.get(backend_name) if backend_name else None
        for kind, levers in self.levers.items():
            levers.ended(pid, backend if backend is not None and backend.kind == kind else None)
        self._tools.ended(pid, record, command.reason)

    def _update_held(self) -> None:
        self.metrics.held.set(self.held_count())

    def spawn_task(self, lever: str, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, best effort (failures counted under ``lever``)."""
        self._background.spawn(lever, work)
