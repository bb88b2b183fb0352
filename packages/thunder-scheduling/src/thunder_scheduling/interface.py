"""``SchedulingCore``: the interface of the scheduling core, as its callers use it.

``ProgramScheduler`` implements it; the live service's driver and the simulator's virtual
replay are written against it (tests may pass a scripted fake).
"""

from __future__ import annotations

from typing import Protocol

from thunder_scheduling.commands import Command
from thunder_scheduling.events import Event
from thunder_scheduling.snapshot import SchedulerSnapshot


class SchedulingCore(Protocol):
    """Events and a clock in, commands out; no I/O."""

    def handle(self, event: Event) -> list[Command]:
        """Apply ``event`` (stamped with its time ``at``); the commands it causes."""
        ...

    def tick(self, now: float) -> list[Command]:
        """Time passed to ``now``: the commands that causes (decay, leases, aging)."""
        ...

    def next_deadline(self) -> float | None:
        """The earliest time a ``tick`` could change a decision (None: none pending)."""
        ...

    def has_program(self, program_id: str) -> bool:
        """Whether the core knows ``program_id`` (live or recently ended)."""
        ...

    def route_untagged(self, at: float) -> str | None:
        """The backend for a request that belongs to no program (None: none can take it)."""
        ...

    def snapshot(self) -> SchedulerSnapshot:
        """Programs, backends and counters, for observation."""
        ...


__all__ = ["SchedulingCore"]
