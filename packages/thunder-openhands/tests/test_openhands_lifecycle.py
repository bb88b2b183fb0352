"""ConversationTracker: conversation events -> lifecycle events (socket-free, no SDK needed)."""

from __future__ import annotations

from dataclasses import dataclass

from thunder_openhands.lifecycle import ConversationTracker
from thunder_testkit.emitter import RecordingEmitter


@dataclass
class ActionEvent:
    tool_call_id: str
    tool_name: str


@dataclass
class ObservationEvent:
    tool_call_id: str


@dataclass
class Condensation:
    forgotten_event_ids: set[str]


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
        ("start", "c1", "openhands"), ("tool", "c1", "a", "terminal"),
        ("tool_end", "c1", "a", "ok"), ("tool", "c1", "b", "file_editor"),
        ("tool_end", "c1", "b", "error"), ("end", "c1", "ok"),
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
        assert emitter.events[-1] == ("end", "c", expected), (status, exc)
    emitter = RecordingEmitter()
    tracker = ConversationTracker(emitter)
    tracker.bind("c")
    tracker.after_run("paused")
    tracker.after_run("waiting_for_confirmation")
    assert emitter.events == [("start", "c", "openhands")]
    tracker.closed()
    assert emitter.events[-1] == ("end", "c", "cancelled")


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
    assert emitter.events == [("end", "w", "ok")]  # once, with the last run's outcome


def test_a_condensation_is_a_context_compacted_hint_of_an_open_program() -> None:
    emitter = RecordingEmitter()
    tracker = ConversationTracker(emitter)
    tracker.on_event(Condensation({"e1"}))         # not bound yet: nothing to hint about
    tracker.bind("c1")
    tracker.before_run()
    tracker.on_event(Condensation({"e1", "e2"}))
    tracker.after_run("finished")
    tracker.on_event(Condensation({"e3"}))         # the program has ended: nothing sent
    assert emitter.events == [
        ("start", "c1", "openhands"), ("hint", "c1", "context_compacted"), ("end", "c1", "ok"),
    ]
