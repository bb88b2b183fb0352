"""Send lifecycle events off the agent's hot path.

Adapters call ``LifecycleEmitter.emit(...)``, which only appends to a bounded queue and returns
(microseconds). One daemon thread sends the events in order with the client's timeout. The
policy when things go wrong, chosen so that an agent is never blocked or broken by us:

* the scheduler is unreachable or answers an error: the event is dropped, a warning names the
  event and the program (once per program and kind of failure, to keep logs readable), and the
  run goes on; the scheduler's lease ends a program whose end event was lost;
* the queue is full (the scheduler is slower than the agent for a long time): the newest event
  is dropped with a warning, counted in ``dropped``;
* at interpreter exit, queued events get up to ``drain_timeout_s`` to go out.

Events for one program are sent in the order they were emitted (one sender thread, FIFO).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thunder_core.client import ThunderClient, ThunderError
from thunder_core.contract import CacheHint, ProgramEndStatus, ToolEndStatus

log = logging.getLogger("thunder_core.emitter")

_Call = Callable[[ThunderClient], Any]


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str
    program_id: str
    call: _Call
    done: threading.Event | None = None


@dataclass
class EmitterStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    warned: set[tuple[str, str]] = field(default_factory=set)


_live_emitters: weakref.WeakSet[LifecycleEmitter] = weakref.WeakSet()


class LifecycleEmitter:
    """Fire-and-forget lifecycle events for one scheduler, sent in order by a daemon thread."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        admin_key: str | None = None,
        timeout_s: float = 2.0,
        max_queue: int = 10_000,
        drain_timeout_s: float = 2.0,
        client: ThunderClient | None = None,
    ) -> None:
        self.client = client or ThunderClient(base_url, admin_key=admin_key, timeout_s=timeout_s)
        self.stats = EmitterStats()
        self.drain_timeout_s = drain_timeout_s
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="thunder-emitter", daemon=True)
        self._thread.start()
        _live_emitters.add(self)

    # -- events ---------------------------------------------------------------------------------

    def program_started(self, program_id: str, **metadata: Any) -> None:
        self._put("program start", program_id,
                  lambda c: c.start_program(program_id, **metadata))

    def tool_started(self, program_id: str, call_id: str, tool_name: str, **extra: Any) -> None:
        self._put("tool start", program_id,
                  lambda c: c.start_tool(program_id, call_id, tool_name, **extra))

    def tool_ended(self, program_id: str, call_id: str,
                   status: ToolEndStatus | str = ToolEndStatus.OK, error: str | None = None
                   ) -> None:
        self._put("tool end", program_id,
                  lambda c: c.end_tool(program_id, call_id, status=status, error=error))

    def program_ended(self, program_id: str,
                      status: ProgramEndStatus | str = ProgramEndStatus.OK,
                      reason: str | None = None) -> None:
        self._put("program end", program_id,
                  lambda c: c.end_program(program_id, status=status, reason=reason))

    def hinted(self, program_id: str, *hints: CacheHint) -> None:
        """Cache hints (``thunder_core.contract.CacheHint``), validated here, sent in order."""
        if hints:
            self._put("cache hints", program_id, lambda c: c.send_hints(program_id, *hints))

    # -- control --------------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything emitted so far was sent (or failed). True if it finished."""
        done = threading.Event()
        try:
            self._queue.put(_Item("flush", "", lambda c: None, done), timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(timeout_s)

    def close(self) -> None:
        """Send what is queued (up to ``drain_timeout_s``) and stop the thread."""
        self.flush(self.drain_timeout_s)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(self.drain_timeout_s)
        self.client.close()

    # -- internals ------------------------------------------------------------------------------

    def _put(self, kind: str, program_id: str, call: _Call) -> None:
        try:
            self._queue.put_nowait(_Item(kind, program_id, call))
        except queue.Full:
            self.stats.dropped += 1
            self._warn(kind, program_id, "queue full", "the event queue is full")

    def _warn(self, kind: str, program_id: str, cause: str, message: str) -> None:
        key = (program_id, cause)
        if key in self.stats.warned:
            return
        if len(self.stats.warned) > 10_000:
            self.stats.warned.clear()
        self.stats.warned.add(key)
        log.warning(
            "thunder: %s for program %s was not delivered to %s (%s); the agent goes on, and "
            "the scheduler will end the program by its lease if the end event is lost",
            kind, program_id, self.client.base_url, message,
        )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                item.call(self.client)
                if item.done is None:
                    self.stats.sent += 1
            except ThunderError as exc:
                self.stats.failed += 1
                self.stats.last_error = str(exc)
                self._warn(item.kind, item.program_id, type(exc).__name__, str(exc))
            except Exception as exc:  # never let the sender thread die
                self.stats.failed += 1
                self.stats.last_error = repr(exc)
                self._warn(item.kind, item.program_id, type(exc).__name__, repr(exc))
            finally:
                if item.done is not None:
                    item.done.set()


@atexit.register
def _drain_all() -> None:
    for emitter in list(_live_emitters):
        try:
            emitter.flush(emitter.drain_timeout_s)
        except Exception:  # pragma: no cover - best effort at exit
            pass


__all__ = ["EmitterStats", "LifecycleEmitter"]
