"""ConversationTracker: conversation events -> lifecycle events (socket-free, no SDK needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thunder_openhands.lifecycle import ConversationTracker


class RecordingEmitter:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def program_started(self, program_id: str, **metadata: Any) -> None:
        self.events.append(("start", program_id, metadata["framework"]))

    def tool_started(self, program_id: str, call_id: str, tool_name: str, **extra: Any) -> None:
        self.events.append(("tool", call_id, tool_name))

    def tool_ended(self, program_id: str, call_id: str, status: Any = "ok", error: Any = None
                   ) -> None:
        self.events.append(("tool_end", call_id, str(status)))

    def program_ended(self, program_id: str, status: Any = "ok", reason: Any = None) -> None:
        self.events.append(("end", str(status)))


@dataclass
class ActionEvent:
    tool_call_id: str
    tool_name: str


@dataclass
class ObservationEvent:
    tool_call_id: str


@dataclass
class AgentErrorEvent:
    tool_call_id: str
    error: str


def test_a_finished_run_is_one_program_with_its_tools_in_order() -> None:
    emitter = RecordingEmitter()
    tracker = ConversationTracker(emitter)
    tracker.bind("c1")
    tracker.before_run()
    tracker.on_event(ActionEvent("a", "terminal"))
    tracker.on_event(ObservationEvent("a"))
    tracker.on_event(ActionEvent("b", "file_editor"))
    tracker.on_event(AgentErrorEvent("b", "boom"))
    tracker.on_event(AgentErrorEvent("never-started", "malformed call"))
    tracker.after_run("finished")
    tracker.closed()
    assert emitter.events == [
        ("start", "c1", "openhands"), ("tool", "a", "terminal"), ("tool_end", "a", "ok"),
        ("tool", "b", "file_editor"), ("tool_end", "b", "error"), ("end", "ok"),
    ]


def test_outcomes_error_stuck_cancel_and_paused() -> None:
    cases = [("error", None, "error"), ("stuck", None, "error"),
             ("running", RuntimeError("x"), "error"),
             ("running", KeyboardInterrupt(), "cancelled")]
    for status, exc, expected in cases:
        emitter = RecordingEmitter()
        tracker = ConversationTracker(emitter)
        tracker.bind("c")
        tracker.after_run(status, exc)
        assert emitter.events[-1] == ("end", expected), (status, exc)
    emitter = RecordingEmitter()
    tracker = ConversationTracker(emitter)
    tracker.bind("c")
    tracker.after_run("paused")
    tracker.after_run("waiting_for_confirmation")
    assert emitter.events == [("start", "c", "openhands")]
    tracker.closed()
    assert emitter.events[-1] == ("end", "cancelled")


def test_a_second_run_reopens_the_program_and_runtime_holders_end_at_close() -> None:
    emitter = RecordingEmitter()
    tracker = ConversationTracker(emitter)
    tracker.bind("c")
    tracker.after_run("finished")
    tracker.before_run()
    tracker.after_run("finished")
    assert [e[0] for e in emitter.events] == ["start", "end", "start", "end"]

    emitter = RecordingEmitter()
    holder = ConversationTracker(emitter, holds_runtime=True)
    holder.bind("w", already_started=True)
    holder.after_run("finished")
    assert emitter.events == []               # the runtime stays with the open program
    holder.closed()
    holder.closed()
    assert emitter.events == [("end", "ok")]  # once, with the last run's outcome
