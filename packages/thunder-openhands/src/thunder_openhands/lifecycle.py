"""One OpenHands conversation as one Thunder program: the lifecycle state machine.

``ConversationTracker`` turns what a conversation does into lifecycle events and hands them to
an emitter (``thunder_core.emitter.LifecycleEmitter`` in production: queued, sent by a daemon
thread with timeouts, dropped with a warning when the scheduler is down). It does no I/O itself.

Mapping (program id = conversation id, framework ``openhands``):

* conversation created -> program start (skipped when a ``ThunderWorkspace`` already started
  the program to acquire its runtime);
* ``ActionEvent`` with a tool call -> tool start (tool name, call id); the matching
  ``ObservationEvent`` / ``UserRejectObservation`` / ``AgentErrorEvent`` -> tool end (``ok``;
  ``error`` for the agent-error and rejection events). An observation without a started call
  (an ``AgentErrorEvent`` for a malformed call the SDK never ran) sends nothing;
* ``run()`` returning with status ``finished`` -> program end ``ok``; ``error`` / ``stuck`` or
  ``run()`` raising an ``Exception`` -> program end ``error``; a ``BaseException`` that is not an
  ``Exception`` (``KeyboardInterrupt``, task cancellation) -> ``cancelled``; ``paused``,
  ``waiting_for_confirmation`` and ``idle`` keep the program open;
* a ``Condensation`` event (the condenser forgot part of the history) -> cache hint
  ``context_compacted``: the program's old KV will not be read again;
* ``close()`` (also what deleting a conversation on the agent server does) -> program end
  ``cancelled`` if the program is still open;
* a conversation that runs again after its program ended (``send_message`` + ``run``) starts
  the program again under the same id.

Conversations holding a scheduler runtime (``holds_runtime``) keep their program open across
finished runs and end it at ``close()`` with the last run's outcome: the tool manager tears
down a program's runtimes when the program ends, and the conversation still works in it.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import Any, Final, Protocol

from thunder_core.contract import (
    CacheHint,
    Framework,
    HintKind,
    ProgramEndStatus,
    ToolEndStatus,
)

RUN_STATUS_OUTCOME: Final[dict[str, tuple[ProgramEndStatus, str]]] = {
    "finished": (ProgramEndStatus.OK, "conversation finished"),
    "error": (ProgramEndStatus.ERROR, "conversation ended in error"),
    "stuck": (ProgramEndStatus.ERROR, "conversation stuck (OpenHands stuck detector)"),
}
"""``ConversationExecutionStatus`` values (``openhands/sdk/conversation/state.py``) that end a
run for good; the SDK's own ``is_terminal()`` is exactly these three."""


class Emitter(Protocol):
    """What the tracker needs of ``LifecycleEmitter``."""

    def program_started(self, program_id: str, **metadata: Any) -> None: ...

    def tool_started(self, program_id: str, call_id: str, tool_name: str, **extra: Any) -> None:
        ...

    def tool_ended(self, program_id: str, call_id: str,
                   status: ToolEndStatus | str = ..., error: str | None = ...) -> None: ...

    def program_ended(self, program_id: str, status: ProgramEndStatus | str = ...,
                      reason: str | None = ...) -> None: ...

    def hinted(self, program_id: str, *hints: CacheHint) -> None: ...


class ProgramState(StrEnum):
    NEW = "new"
    OPEN = "open"
    ENDED = "ended"


class ConversationTracker:
    """Lifecycle of one conversation; thread safe (tool callbacks may run on worker threads)."""

    def __init__(
        self,
        emitter: Emitter,
        *,
        priority: int = 0,
        tags: dict[str, str] | None = None,
        holds_runtime: bool = False,
    ) -> None:
        self.emitter = emitter
        self.priority = priority
        self.tags = dict(tags or {})
        self.holds_runtime = holds_runtime
        self.program_id: str | None = None
        self.state = ProgramState.NEW
        self.last_outcome: tuple[ProgramEndStatus, str] | None = None
        self.start_pending = False
        """True from a program start until the caller confirmed it was sent."""
        self._calls: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- program --------------------------------------------------------------------------------

    def bind(self, program_id: str, *, already_started: bool = False) -> None:
        """The conversation exists: start its program (unless a workspace already did)."""
        with self._lock:
            self.program_id = program_id
            if already_started:
                self.state = ProgramState.OPEN
                return
            self._open()

    def _open(self) -> None:
        assert self.program_id is not None
        self.state = ProgramState.OPEN
        self.last_outcome = None
        self.start_pending = True
        self.emitter.program_started(
            self.program_id, framework=Framework.OPENHANDS.value, priority=self.priority,
            tags=self.tags,
        )

    def _end(self, status: ProgramEndStatus, reason: str) -> None:
        assert self.program_id is not None
        self.state = ProgramState.ENDED
        self._calls.clear()
        self.emitter.program_ended(self.program_id, status=status, reason=reason)

    def before_run(self) -> bool:
        """``run()`` starts: reopen the program if an earlier run ended it (returns True then)."""
        with self._lock:
            if self.program_id is not None and self.state is ProgramState.ENDED:
                self._open()
                return True
            return False

    def after_run(self, status: str | None, error: BaseException | None = None) -> None:
        """``run()`` returned with execution status ``status``, or raised ``error``."""
        with self._lock:
            if self.program_id is None or self.state is not ProgramState.OPEN:
                return
            if error is not None:
                kind = ProgramEndStatus.ERROR if isinstance(error, Exception) else (
                    ProgramEndStatus.CANCELLED)
                outcome = (kind, f"run raised {type(error).__name__}: {error}"[:4000])
            else:
                found = RUN_STATUS_OUTCOME.get(status or "")
                if found is None:
                    return  # paused / waiting for confirmation / idle: not over
                outcome = found
            self.last_outcome = outcome
            if not self.holds_runtime:
                self._end(*outcome)

    def closed(self) -> None:
        """``close()``: end the program if still open (last outcome, else ``cancelled``)."""
        with self._lock:
            if self.program_id is None or self.state is not ProgramState.OPEN:
                return
            status, reason = self.last_outcome or (
                ProgramEndStatus.CANCELLED, "conversation closed")
            self._end(status, reason)

    # -- tools ----------------------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """Conversation callback: tool start / end from the SDK's events (by class name, so
        this module needs no SDK import)."""
        kind = type(event).__name__
        if kind == "ActionEvent":
            call_id = getattr(event, "tool_call_id", None)
            tool_name = getattr(event, "tool_name", None)
            if not call_id or not tool_name:
                return
            with self._lock:
                if self.program_id is None or call_id in self._calls:
                    return
                if self.state is not ProgramState.OPEN:
                    self._open()
                self._calls[call_id] = tool_name
                self.emitter.tool_started(self.program_id, call_id, tool_name)
        elif kind == "Condensation":
            forgotten = len(getattr(event, "forgotten_event_ids", None) or ())
            with self._lock:
                if self.program_id is None or self.state is not ProgramState.OPEN:
                    return
                self.emitter.hinted(self.program_id, CacheHint(
                    kind=HintKind.CONTEXT_COMPACTED,
                    reason=f"OpenHands condensation forgot {forgotten} events"))
        elif kind in ("ObservationEvent", "UserRejectObservation", "AgentErrorEvent"):
            call_id = getattr(event, "tool_call_id", None)
            with self._lock:
                if self.program_id is None or not call_id or self._calls.pop(call_id, None) is None:
                    return
                if kind == "ObservationEvent":
                    self.emitter.tool_ended(self.program_id, call_id, status=ToolEndStatus.OK)
                else:
                    detail = getattr(event, "error", None) or getattr(event, "rejection_reason", "")
                    self.emitter.tool_ended(
                        self.program_id, call_id, status=ToolEndStatus.ERROR,
                        error=f"{kind}: {detail}"[:4000],
                    )


__all__ = ["RUN_STATUS_OUTCOME", "ConversationTracker", "Emitter", "ProgramState"]
