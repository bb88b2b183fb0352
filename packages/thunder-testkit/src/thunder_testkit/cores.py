"""``ScriptedCore``: a fake scheduling core (``thunder_scheduling.SchedulingCore``) for tests
of what surrounds the core (driver, gate, levers): each event is answered with the next
scripted command list (or by ``respond``), so each command's execution is checked alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from thunder_scheduling.commands import Command
from thunder_scheduling.events import Event
from thunder_scheduling.snapshot import Counters, SchedulerSnapshot

__all__ = ["ScriptedCore"]


@dataclass
class ScriptedCore:
    script: list[list[Command]] = field(default_factory=list)
    """Answers to the next events, in order (then ``respond``, or nothing)."""
    respond: Callable[[Event], list[Command]] | None = None
    events: list[Event] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    deadline: float | None = None
    tick_commands: list[Command] = field(default_factory=list)
    known: bool = True
    """What ``has_program`` answers for every program."""

    def handle(self, event: Event) -> list[Command]:
        self.events.append(event)
        if self.script:
            return self.script.pop(0)
        return self.respond(event) if self.respond is not None else []

    def tick(self, now: float) -> list[Command]:
        self.ticks.append(now)
        commands, self.tick_commands = self.tick_commands, []
        return commands

    def next_deadline(self) -> float | None:
        return self.deadline

    def has_program(self, program_id: str) -> bool:
        return self.known

    def route_untagged(self, at: float) -> str | None:
        return None

    def snapshot(self) -> SchedulerSnapshot:
        return SchedulerSnapshot(at=0.0, policy="scripted", programs=[], backends=[],
                                 counters=Counters(), waiting_programs=0, tool_estimates_s={})
