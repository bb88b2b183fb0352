"""What the driver tells the tool manager, and the per-spec queues it derives from events.

A program whose start event carries the tag ``runtime_spec`` is *queued* for that spec until
the core first admits one of its requests; then ``on_program_admitted(id, spec)`` prepares
its runtime (a start event that arrives after the first admission prepares at once). Every
change of a spec's queue length is reported with ``on_queue_demand(spec, n_queued)`` so the
warm pool can be sized to the queue; a spec whose queue empties is dropped. ``Resume`` calls
``on_program_restoring``, ``Release`` ``on_program_ended``. Hooks may be sync or async (run
in the background, best effort); a hook the manager lacks is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from thunder_scheduler.programs import ProgramRecord

__all__ = ["ProgramHooks", "ToolHooks"]

log = logging.getLogger(__name__)


class ProgramHooks(Protocol):
    """What the driver tells the tool manager (``tools.ToolManager`` has these methods)."""

    def on_program_admitted(self, program_id: str, spec_hint: str | None) -> Any: ...

    def on_program_restoring(self, program_id: str) -> Any: ...

    def on_program_ended(self, program_id: str, reason: str) -> Any: ...

    def on_queue_demand(self, spec_name: str, queued_programs: int) -> Any: ...


class ToolHooks:
    def __init__(
        self, hooks: Callable[[], ProgramHooks | None], spawn: Callable[[str, Awaitable[Any]], None]
    ) -> None:
        self._hooks = hooks
        self._spawn = spawn
        self._queued: dict[str, set[str]] = {}

    def call(self, name: str, *args: Any) -> None:
        """Call hook ``name`` (sync or async), best effort."""
        hooks = self._hooks()
        hook = getattr(hooks, name, None) if hooks is not None else None
        if hook is None:
            return
        try:
            result = hook(*args)
        except Exception:
            log.exception("tool manager %s%r failed", name, args)
            return
        if asyncio.iscoroutine(result):
            self._spawn(f"tools.{name}", result)

    # -- program events ---------------------------------------------------------------------

    def started(self, program_id: str, record: ProgramRecord, spec: str | None) -> None:
        if not spec or record.spec == spec:
            return
        if record.spec is not None and not record.admitted:
            self._dequeue(record.spec, program_id)
        record.spec = spec
        if record.admitted:  # the start event raced the first request: prepare now
            self.call("on_program_admitted", program_id, spec)
            return
        queued = self._queued.setdefault(spec, set())
        queued.add(program_id)
        self.call("on_queue_demand", spec, len(queued))

    def admitted(self, program_id: str, record: ProgramRecord) -> None:
        """The core admitted a request of the program (only the first one matters)."""
        if record.admitted:
            return
        record.admitted = True
        if record.spec is not None:
            self._dequeue(record.spec, program_id)
            self.call("on_program_admitted", program_id, record.spec)

    def ended(self, program_id: str, record: ProgramRecord, reason: str) -> None:
        if record.spec is not None and not record.admitted:
            self._dequeue(record.spec, program_id)
        self.call("on_program_ended", program_id, reason)

    def _dequeue(self, spec: str, program_id: str) -> None:
        queued = self._queued.get(spec)
        if queued is None or program_id not in queued:
            return
        queued.discard(program_id)
        if not queued:
            del self._queued[spec]
        self.call("on_queue_demand", spec, len(queued))

    def queued(self, spec: str) -> int:
        """Programs started for ``spec`` whose first request has not been admitted yet."""
        return len(self._queued.get(spec, ()))

    def tracked(self) -> int:
        """Programs queued over all specs."""
        return sum(len(q) for q in self._queued.values())
