"""The driver's per-program state: one :class:`ProgramRecord` per live program.

:class:`ProgramRecords` creates a record at a program's first event and removes it at its
``Release`` in one call (:meth:`ProgramRecords.remove`), which also drops the program's last
request body and moves its runtime ids to a bounded list of ended programs (so ``GET
/v1/programs/{id}`` still lists them). The bodies kept for a pre-restore warm-up are a bounded
LRU as well, so nothing here outlives its program or grows without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from thunder_core.contract import ProgramStatus, ProgramView
from thunder_scheduling.snapshot import ProgramSnapshot, SchedulerSnapshot

__all__ = ["ENDED_RUNTIME_IDS_MAX", "ProgramRecord", "ProgramRecords"]

ENDED_RUNTIME_IDS_MAX: Final = 10_000
"""Ended programs whose runtime ids stay listed (the tool manager remembers as many ended
programs, ``ToolManagerSettings.ended_programs_memory``)."""


@dataclass(slots=True)
class ProgramRecord:
    """What the driver knows of one live program (the core knows the rest)."""

    seq: int = 0
    """Engine request ids handed out so far (``<program>:<seq>``)."""
    priority: int | None = None
    """Engine priority for its requests (``SetPriority`` / ``Admit``)."""
    backend: str | None = None
    """Where its last request was admitted."""
    spec: str | None = None
    """Its ``runtime_spec`` tag, if it named one."""
    admitted: bool = False
    """Whether the core has admitted any of its requests."""
    tool_calls: set[str] = field(default_factory=set)
    """Tool calls started and not ended."""
    runtime_ids: list[str] = field(default_factory=list)
    """Runtimes it acquired or named in tool starts."""
    framework: str | None = None
    """From its start event, once the core took it (labels the programs-ended counter)."""
    end_status: str | None = None
    """From its ``ProgramEnded``, until the core's ``Release`` (labels the same counter)."""
    paused: bool = False
    """Between a ``Pause`` and the next ``Resume``: the core took its KV away."""
    split_keys: frozenset[int] = frozenset()
    """Prefix keys of the last prompt-split prefill on ``backend`` (cleared by ``Pause``)."""
    shared_prefix: str | None = None
    """A ``shared_prefix`` hint's id not warmed yet (``prefills.EnginePrefills``)."""


class ProgramRecords:
    def __init__(self, bodies_max: int, ended_runtime_ids_max: int = ENDED_RUNTIME_IDS_MAX):
        self._records: dict[str, ProgramRecord] = {}
        self._bodies_max = bodies_max
        self._bodies: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._ended_max = ended_runtime_ids_max
        self._ended_runtime_ids: OrderedDict[str, list[str]] = OrderedDict()

    def get(self, program_id: str) -> ProgramRecord | None:
        return self._records.get(program_id)

    def ensure(self, program_id: str) -> ProgramRecord:
        record = self._records.get(program_id)
        if record is None:
            record = self._records[program_id] = ProgramRecord()
        return record

    def remove(self, program_id: str) -> ProgramRecord:
        """The program ended: forget it (an empty record if it had none)."""
        record = self._records.pop(program_id, None) or ProgramRecord()
        self._bodies.pop(program_id, None)
        if record.runtime_ids:
            self._ended_runtime_ids[program_id] = record.runtime_ids
            self._ended_runtime_ids.move_to_end(program_id)
            while len(self._ended_runtime_ids) > self._ended_max:
                self._ended_runtime_ids.popitem(last=False)
        return record

    def values(self) -> Iterator[ProgramRecord]:
        return iter(self._records.values())

    # -- the last request body (for a pre-restore warm-up) ----------------------------------

    def remember_body(self, program_id: str, path: str, body: Mapping[str, Any]) -> None:
        """Keep the program's last request (bounded LRU over programs)."""
        if self._bodies_max <= 0:
            return
        self._bodies[program_id] = (path, dict(body))
        self._bodies.move_to_end(program_id)
        while len(self._bodies) > self._bodies_max:
            self._bodies.popitem(last=False)

    def last_body(self, program_id: str) -> tuple[str, dict[str, Any]] | None:
        return self._bodies.get(program_id)

    def forget_body(self, program_id: str) -> None:
        """Drop the program's last request (its context was rewritten: nothing to warm)."""
        self._bodies.pop(program_id, None)

    # -- runtime ids ----------------------------------------------------------------------------

    def note_runtime(self, program_id: str, runtime_id: str) -> None:
        ids = self.ensure(program_id).runtime_ids
        if runtime_id not in ids:
            ids.append(runtime_id)

    def runtime_ids(self, program_id: str, *, ended: bool = True) -> list[str]:
        """A live program's runtime ids, else (``ended``) those it had when it ended."""
        record = self._records.get(program_id)
        if record is not None and record.runtime_ids:
            return list(record.runtime_ids)
        return list(self._ended_runtime_ids.get(program_id, ())) if ended else []

    def tracked(self) -> dict[str, int]:
        """Entries per structure (``programs`` and ``last_bodies`` are 0 once every program
        ended; ``ended_runtime_ids`` is bounded)."""
        return {
            "programs": len(self._records),
            "last_bodies": len(self._bodies),
            "ended_runtime_ids": len(self._ended_runtime_ids),
        }

    # -- views --------------------------------------------------------------------------------

    def view(self, row: ProgramSnapshot) -> ProgramView:
        """The contract's view of a core snapshot row, with the program's runtime ids."""
        view = ProgramView.model_validate(asdict(row))
        ids = self.runtime_ids(row.program_id, ended=view.status == ProgramStatus.TERMINATED)
        if ids:
            view.runtime_ids = ids
        return view

    def views(self, snapshot: SchedulerSnapshot, program_id: str | None = None
              ) -> list[ProgramView]:
        """Every program of ``snapshot`` (or the newest incarnation of ``program_id``)."""
        if program_id is None:
            return [self.view(row) for row in snapshot.programs]
        found: ProgramSnapshot | None = None
        for row in snapshot.programs:
            if row.program_id == program_id and (
                found is None or row.incarnation >= found.incarnation
            ):
                found = row
        return [self.view(found)] if found is not None else []
