"""The async driver around the pure scheduling core: events in, commands carried out.

The core (``thunder_scheduling``) is synchronous, fast and does no I/O. The driver owns it
and everything with side effects, all on one event loop:

* **Time.** Every event is stamped with ``Clock.now()`` (modelled seconds, ``clock.py``). A
  ticker task calls ``core.tick(now)`` at ``core.next_deadline()``, or after ``tick_s`` modelled
  seconds when the core names no earlier deadline (the backstop), sleeping the matching wall
  time. An event that moves the deadline earlier wakes the ticker.
* **Held requests.** ``arrive()`` registers a future for the request before the event is fed,
  so an ``Admit`` returned at once and an ``Admit`` returned by a later event or tick resolve it
  the same way. ``Hold`` leaves it pending; ``Release`` fails the program's pending futures
  with 409. A waiter that gives up (client gone) removes its future.
* **Commands.** ``Admit`` resolves the future; ``SetPriority`` sets the engine priority sent
  with the program's later requests; ``Pause`` / ``Resume`` use the engine's KV levers when
  the backend has them (llama.cpp slot save / restore, opt-in via ``slot_offload``);
  ``Prewarm`` sends a one-token prefill of the program's last request to the backend;
  ``Release`` (every end: explicit end, error, cancel, ThunderAgent release, lease expiry)
  fails held requests, calls ``backend.release_program`` with the program's SGLang session
  and llama.cpp slot (the slot is erased only when no other live program is pinned to it) and
  tells the tool manager. Engine levers run as background tasks: best effort, logged and
  counted on failure, never blocking the loop or crashing the service.
* **SGLang sessions** (capability ``sessions``): :meth:`Driver.session_for` opens one session
  per program on its backend before the program's first request there carries
  ``session_id`` (one round trip, once per program and backend; concurrent requests share
  it); a migration closes the old one; ``Release`` closes it. A refused open is counted and
  the program runs without a session.
* **Tool manager** (``hooks``): a program whose start event carries the tag
  ``runtime_spec`` is *queued* for that spec until the core first admits one of its requests;
  then ``on_program_admitted(id, spec)`` prepares its runtime (a ``Resume`` calls
  ``on_program_restoring``). Every change of a spec's queue length is reported with
  ``on_queue_demand(spec, n_queued)`` so the warm pool can be sized to the queue. The
  program view lists the runtime ids the program acquired or named in tool starts.
* **Backends.** ``on_backend_change`` (subscribed to the backend monitor) feeds
  ``BackendUpdated``.

Decision latency (wall time of each ``handle`` / ``tick``) goes to the metrics histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

import httpx

from thunder_core.contract import (
    RUNTIME_SPEC_TAG,
    Framework,
    ProgramEndStatus,
    ProgramStatus,
    ProgramView,
)
from thunder_scheduler.backends.base import Backend, RequestHints, SessionLever, SlotOffload
from thunder_scheduler.backends.monitor import BackendState
from thunder_scheduler.clock import Clock
from thunder_scheduler.gate import GateError
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import (
    Admit,
    Command,
    Hold,
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
from thunder_scheduling.snapshot import ProgramSnapshot

__all__ = ["Driver", "ProgramHooks"]

log = logging.getLogger(__name__)

PREWARM_PATHS: Final = ("/v1/chat/completions", "/v1/completions", "/generate")
LEVER_TIMEOUT_S: Final = 30.0
"""Upper bound on one engine lever call (prefill warm-up, slot save/restore, release)."""
ENDED_RUNTIME_IDS_MAX: Final = 10_000
"""Ended programs whose runtime ids stay listed (the tool manager remembers as many ended
programs, ``ToolManagerSettings.ended_programs_memory``)."""


class ProgramHooks(Protocol):
    """What the driver tells the tool manager (``tools.ToolManager`` has these methods)."""

    def on_program_admitted(self, program_id: str, spec_hint: str | None) -> Any: ...

    def on_program_restoring(self, program_id: str) -> Any: ...

    def on_program_ended(self, program_id: str, reason: str) -> Any: ...

    def on_queue_demand(self, spec_name: str, queued_programs: int) -> Any: ...


@dataclass(slots=True)
class _Waiter:
    program_id: str
    future: asyncio.Future[Admit]


@dataclass(slots=True)
class _SlotFile:
    backend: str
    slot_id: int
    filename: str
    saved: bool = False


def _view(row: ProgramSnapshot) -> ProgramView:
    return ProgramView.model_validate(asdict(row))


def _slot_offload(backend: Backend | None) -> SlotOffload | None:
    """The backend's slot save/restore lever, when it has one."""
    if backend is None or not backend.capabilities.slot_offload:
        return None
    return backend if isinstance(backend, SlotOffload) else None


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
    ) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.core = core
        self.backends = dict(backends)
        self.clock = clock
        self.metrics = metrics
        self.tick_s = tick_s
        self.hooks = hooks
        self._prewarm_http = prewarm_http
        self._bodies_max = prewarm_bodies_max
        self._slot_offload = slot_offload
        self._total_slots = total_slots or (lambda name: None)
        self._waiters: dict[str, _Waiter] = {}
        self._priority: dict[str, int] = {}
        self._last_body: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._backend_of: dict[str, str] = {}
        self._slots: dict[str, _SlotFile] = {}
        self._seq: dict[str, int] = {}
        self._tool_calls: dict[str, set[str]] = {}
        self._framework_of: dict[str, str] = {}  # live programs, for the ended counter
        self._end_status: dict[str, str] = {}  # ProgramEnded seen, Release not yet
        self._sessions: dict[str, tuple[str, str]] = {}  # program -> (backend, session id)
        self._session_opening: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._session_refused: set[tuple[str, str]] = set()
        self._runtime_ids: dict[str, list[str]] = {}
        self._ended_runtime_ids: OrderedDict[str, list[str]] = OrderedDict()
        self._spec_of: dict[str, str] = {}  # program -> runtime_spec tag
        self._queued: dict[str, set[str]] = {}  # spec -> programs not admitted yet
        self._admitted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._prewarm_seq = 0

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
        for waiter in list(self._waiters.values()):
            if not waiter.future.done():
                waiter.future.set_exception(GateError(503, "scheduler shutting down"))
        self._waiters.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
                    self._framework_of[event.program_id] = event.framework
                    if is_new:
                        self.metrics.program_started(event.framework)
                self._on_started(event)
            case ProgramEnded() if event.program_id in self._framework_of:
                self._end_status[event.program_id] = event.status.value
            case ToolStarted():
                self._tool_calls.setdefault(event.program_id, set()).add(event.call_id)
                for runtime_id in event.runtime_ids:
                    self.note_runtime(event.program_id, runtime_id)
            case ToolFinished():
                self._tool_calls.get(event.program_id, set()).discard(event.call_id)
            case _:
                pass
        self._execute(commands)
        self._wake.set()
        return commands

    def has_tool_call(self, program_id: str, call_id: str) -> bool:
        """Whether ``call_id`` of ``program_id`` started and has not ended."""
        return call_id in self._tool_calls.get(program_id, ())

    def tick(self) -> list[Command]:
        """Run the core's tick now (the ticker does this on its own; tests call it too)."""
        started = time.perf_counter()
        commands = self.core.tick(self.clock.now())
        self.metrics.decision.observe(time.perf_counter() - started)
        self._execute(commands)
        return commands

    def arrive(self, program_id: str, request_id: str, event: Event) -> asyncio.Future[Admit]:
        """Feed a ``RequestArrived`` and return the future its ``Admit`` resolves."""
        future: asyncio.Future[Admit] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = _Waiter(program_id, future)
        try:
            self.feed(event)
        except BaseException:
            self._waiters.pop(request_id, None)
            raise
        self._update_held()
        return future

    def forget(self, request_id: str) -> None:
        """The waiter for ``request_id`` left (admitted, failed or its client went away)."""
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.cancel()
        self._update_held()

    def next_request_seq(self, program_id: str) -> int:
        seq = self._seq.get(program_id, 0) + 1
        self._seq[program_id] = seq
        return seq

    def priority_of(self, program_id: str) -> int | None:
        return self._priority.get(program_id)

    def slot_of(self, program_id: str, backend: str) -> int | None:
        slot = self._slots.get(program_id)
        return slot.slot_id if slot is not None and slot.backend == backend else None

    def remember_body(self, program_id: str, path: str, body: Mapping[str, Any]) -> None:
        """Keep the program's last request for a pre-restore warm-up (bounded LRU)."""
        if self._bodies_max <= 0:
            return
        self._last_body[program_id] = (path, dict(body))
        self._last_body.move_to_end(program_id)
        while len(self._last_body) > self._bodies_max:
            self._last_body.popitem(last=False)

    def program_views(self) -> list[ProgramView]:
        """Every program the core shows (live and recently ended), as the contract's view."""
        return [self._with_runtimes(_view(row)) for row in self.core.snapshot().programs]

    def _with_runtimes(self, view: ProgramView) -> ProgramView:
        pid = view.program_id
        ids = self._runtime_ids.get(pid)
        if ids is None and view.status == ProgramStatus.TERMINATED:
            ids = self._ended_runtime_ids.get(pid)
        if ids:
            view.runtime_ids = list(ids)
        return view

    def note_runtime(self, program_id: str, runtime_id: str) -> None:
        """``runtime_id`` belongs to ``program_id`` (acquired, or named in a tool start)."""
        ids = self._runtime_ids.setdefault(program_id, [])
        if runtime_id not in ids:
            ids.append(runtime_id)

    def program_view(self, program_id: str) -> ProgramView | None:
        """The newest incarnation of ``program_id``, or None when the core never saw it."""
        found: ProgramSnapshot | None = None
        for row in self.core.snapshot().programs:
            if row.program_id == program_id and (
                found is None or row.incarnation >= found.incarnation
            ):
                found = row
        return self._with_runtimes(_view(found)) if found is not None else None

    def live_program_ids(self) -> set[str]:
        """Programs that have not ended (the tool manager's view of who may hold runtimes)."""
        return {
            row.program_id for row in self.core.snapshot().programs
            if row.status != ProgramStatus.TERMINATED
        }

    def held_count(self) -> int:
        return sum(1 for w in self._waiters.values() if not w.future.done())

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
                self._priority[command.program_id] = command.priority
            case Pause():
                self.metrics.pauses.inc()
                self._on_pause(command)
            case Resume():
                self.metrics.restores.inc()
                if command.migrated:
                    self.metrics.migrations.inc()
                self._on_resume(command)
            case Prewarm():
                self._spawn("prewarm", self._prewarm(command.program_id, command.backend))
            case Release():
                self._release(command)

    def _admit(self, command: Admit) -> None:
        if command.program_id not in self._admitted:
            self._first_admission(command.program_id)
        self._backend_of[command.program_id] = command.backend
        if command.priority is not None:
            self._priority[command.program_id] = command.priority
        if self._slot_offload:
            self._assign_slot(command.program_id, command.backend)
        waiter = self._waiters.get(command.request_id)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(command)
        self._update_held()

    def _release(self, command: Release) -> None:
        pid = command.program_id
        status = self._end_status.pop(pid, ProgramEndStatus.OK.value)
        if "lease" in command.reason:
            self.metrics.lease_expiries.inc()
            status = "lease_expired"
        self.metrics.program_ended(self._framework_of.pop(pid, Framework.OTHER.value), status)
        for rid, waiter in list(self._waiters.items()):
            if waiter.program_id == pid and not waiter.future.done():
                waiter.future.set_exception(
                    GateError(409, f"program {pid!r} was released ({command.reason})")
                )
                del self._waiters[rid]
        self._update_held()
        slot = self._slots.pop(pid, None)
        session = self._sessions.pop(pid, None)
        backend_name = command.backend or self._backend_of.get(pid)
        backend = self.backends.get(backend_name) if backend_name else None
        if backend is not None:
            slot_id = None
            if slot is not None and slot.backend == backend.name and not self._slot_shared(slot):
                slot_id = slot.slot_id
            session_id = session[1] if session is not None and session[0] == backend.name \
                else None
            self._spawn("release", backend.release_program(pid, session_id, slot_id))
        if session is not None and (backend is None or session[0] != backend.name):
            self._close_session(pid, session)
        self._forget_queued(pid)
        self._admitted.discard(pid)
        ids = self._runtime_ids.pop(pid, None)
        if ids:
            self._ended_runtime_ids[pid] = ids
            self._ended_runtime_ids.move_to_end(pid)
            while len(self._ended_runtime_ids) > ENDED_RUNTIME_IDS_MAX:
                self._ended_runtime_ids.popitem(last=False)
        if self.hooks is not None:
            self.call_hook("on_program_ended", pid, command.reason)
        self._priority.pop(pid, None)
        self._last_body.pop(pid, None)
        self._backend_of.pop(pid, None)
        self._seq.pop(pid, None)
        self._tool_calls.pop(pid, None)

    def call_hook(self, name: str, *args: Any) -> None:
        """Call tool-manager hook ``name`` (sync or async), best effort."""
        if self.hooks is None:
            return
        try:
            result = getattr(self.hooks, name)(*args)
        except Exception:
            log.exception("tool manager %s%r failed", name, args)
            return
        if asyncio.iscoroutine(result):
            self._spawn(f"tools.{name}", result)

    def _update_held(self) -> None:
        self.metrics.held.set(self.held_count())

    # -- tool manager: queue-driven preparation --------------------------------------------------

    def _on_started(self, event: ProgramStarted) -> None:
        spec = event.tags.get(RUNTIME_SPEC_TAG)
        pid = event.program_id
        if not spec or self._spec_of.get(pid) == spec:
            return
        self._forget_queued(pid)
        self._spec_of[pid] = spec
        if pid in self._admitted:  # the start event raced the first request: prepare now
            self.call_hook("on_program_admitted", pid, spec)
            return
        self._queued.setdefault(spec, set()).add(pid)
        self._report_demand(spec)

    def _first_admission(self, program_id: str) -> None:
        self._admitted.add(program_id)
        spec = self._spec_of.get(program_id)
        if spec is None:
            return
        self._forget_queued(program_id, keep_spec=True)
        self.call_hook("on_program_admitted", program_id, spec)

    def _forget_queued(self, program_id: str, *, keep_spec: bool = False) -> None:
        spec = self._spec_of.get(program_id) if keep_spec else self._spec_of.pop(program_id, None)
        queued = self._queued.get(spec) if spec is not None else None
        if spec is not None and queued is not None and program_id in queued:
            queued.discard(program_id)
            self._report_demand(spec)
            if not queued:
                del self._queued[spec]

    def _report_demand(self, spec: str) -> None:
        if self.hooks is not None and hasattr(self.hooks, "on_queue_demand"):
            self.call_hook("on_queue_demand", spec, len(self._queued.get(spec, ())))

    def queued_programs(self, spec: str) -> int:
        """Programs started for ``spec`` whose first request the core has not admitted yet."""
        return len(self._queued.get(spec, ()))

    # -- SGLang sessions ---------------------------------------------------------------------------

    async def session_for(self, program_id: str, backend: Backend) -> str | None:
        """The program's engine session on ``backend``, opened on first use (None: none)."""
        if not backend.capabilities.sessions or not isinstance(backend, SessionLever):
            return None
        current = self._sessions.get(program_id)
        if current is not None and current[0] == backend.name:
            return current[1]
        key = (program_id, backend.name)
        if key in self._session_refused:
            return None
        task = self._session_opening.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._open_session(program_id, backend), name=f"session-{program_id}"
            )
            self._session_opening[key] = task
            task.add_done_callback(lambda _: self._session_opening.pop(key, None))
        return await asyncio.shield(task)

    async def _open_session(self, program_id: str, backend: Backend) -> str | None:
        assert isinstance(backend, SessionLever)
        wanted = f"thunder-{program_id}-{uuid.uuid4().hex[:8]}"
        try:
            session_id = await asyncio.wait_for(backend.open_session(wanted), LEVER_TIMEOUT_S)
        except Exception as exc:
            self._session_refused.add((program_id, backend.name))
            self.metrics.lever_failures.labels("session_open").inc()
            log.warning("opening an SGLang session for %s on %s failed: %s", program_id,
                        backend.name, exc or type(exc).__name__)
            return None
        if not self.core.has_program(program_id):  # it ended while the session opened
            self._close_session(program_id, (backend.name, session_id))
            return None
        old = self._sessions.get(program_id)
        if old is not None and old[0] != backend.name:
            self._close_session(program_id, old)  # migrated: the old engine's refs go
        self._sessions[program_id] = (backend.name, session_id)
        return session_id

    def _close_session(self, program_id: str, session: tuple[str, str]) -> None:
        backend = self.backends.get(session[0])
        if backend is not None:
            self._spawn("session_close", backend.release_program(program_id, session[1], None))

    def _slot_shared(self, slot: _SlotFile) -> bool:
        return any(
            other.backend == slot.backend and other.slot_id == slot.slot_id
            for other in self._slots.values()
        )

    # -- engine levers (best effort) -----------------------------------------------------------

    def spawn_task(self, lever: str, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, best effort (failures counted under ``lever``)."""
        self._spawn(lever, work)

    def _spawn(self, lever: str, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await asyncio.wait_for(work, timeout=LEVER_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.lever_failures.labels(lever).inc()
                log.warning("engine lever %s failed: %s", lever, exc or type(exc).__name__)

        task = asyncio.get_running_loop().create_task(run(), name=f"lever-{lever}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prewarm(self, program_id: str, backend_name: str) -> None:
        last = self._last_body.get(program_id)
        backend = self.backends.get(backend_name)
        if last is None or backend is None or self._prewarm_http is None:
            log.debug("no warm-up for %s on %s (no body or backend)", program_id, backend_name)
            return
        if not backend.capabilities.prefix_warmup:
            return
        path, body = last
        warm = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        if path == "/generate":
            params = dict(warm.get("sampling_params") or {})
            params["max_new_tokens"] = 1
            warm["sampling_params"] = params
        else:
            warm["max_tokens"] = 1
            warm.pop("max_completion_tokens", None)
        self._prewarm_seq += 1
        hints = RequestHints(
            program_id=program_id,
            request_id=f"{program_id}:warm-{self._prewarm_seq}",
            priority=self._priority.get(program_id),
            slot_id=self.slot_of(program_id, backend_name),
        )
        warm = backend.decorate(path, warm, hints)
        response = await self._prewarm_http.post(
            backend.base_url + path, json=warm, headers=backend.request_headers(hints),
            timeout=LEVER_TIMEOUT_S,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"warm-up on {backend_name} answered {response.status_code}")
        self.metrics.prewarms.inc()

    def _assign_slot(self, program_id: str, backend_name: str) -> None:
        backend = self.backends.get(backend_name)
        if backend is None or not backend.capabilities.slot_offload:
            return
        current = self._slots.get(program_id)
        if current is not None and current.backend == backend_name:
            return
        n_slots = self._total_slots(backend_name)
        if not n_slots:
            return
        used = [0] * n_slots
        for slot in self._slots.values():
            if slot.backend == backend_name and slot.slot_id < n_slots:
                used[slot.slot_id] += 1
        slot_id = min(range(n_slots), key=lambda i: (used[i], i))
        digest = hashlib.sha256(program_id.encode()).hexdigest()[:32]
        self._slots[program_id] = _SlotFile(backend_name, slot_id, f"thunder-{digest}.bin")

    def _on_pause(self, command: Pause) -> None:
        slot = self._slots.get(command.program_id)
        offload = _slot_offload(self.backends.get(command.backend))
        if slot is None or offload is None or slot.backend != command.backend:
            return

        async def save() -> None:
            assert offload is not None
            result = await offload.save_slot(slot.slot_id, slot.filename)
            slot.saved = True
            log.info("paused %s: saved slot %d of %s (%d tokens)", command.program_id,
                     slot.slot_id, command.backend, result.n_tokens)

        self._spawn("slot_save", save())

    def _on_resume(self, command: Resume) -> None:
        if self.hooks is not None:
            self.call_hook("on_program_restoring", command.program_id)
        session = self._sessions.get(command.program_id)
        if session is not None and session[0] != command.backend:
            del self._sessions[command.program_id]
            self._close_session(command.program_id, session)
        slot = self._slots.get(command.program_id)
        if slot is None:
            return
        if slot.backend != command.backend:
            del self._slots[command.program_id]  # migrated: its saved KV is on the old engine
            return
        offload = _slot_offload(self.backends.get(command.backend))
        if not slot.saved or offload is None:
            return

        async def restore() -> None:
            assert offload is not None
            result = await offload.restore_slot(slot.slot_id, slot.filename)
            log.info("resumed %s: restored slot %d of %s (%d tokens)", command.program_id,
                     slot.slot_id, command.backend, result.n_tokens)

        self._spawn("slot_restore", restore())
