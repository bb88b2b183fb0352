"""Held requests: the admission future of every request the core has not admitted yet.

``add`` registers a request's future before its ``RequestArrived`` is fed, so an ``Admit``
returned at once and one returned by a later event resolve it the same way (``admit``);
``fail_program`` fails a released program's pending futures (409); ``drop`` removes a waiter
that gave up or was served. Indexed by request id and by program, both emptied as requests
leave.
"""

from __future__ import annotations

import asyncio

from thunder_scheduling.commands import Admit

__all__ = ["HeldRequests"]


class HeldRequests:
    def __init__(self) -> None:
        self._waiters: dict[str, tuple[str, asyncio.Future[Admit]]] = {}
        self._of_program: dict[str, set[str]] = {}

    def add(self, program_id: str, request_id: str) -> asyncio.Future[Admit]:
        future: asyncio.Future[Admit] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = (program_id, future)
        self._of_program.setdefault(program_id, set()).add(request_id)
        return future

    def drop(self, request_id: str) -> asyncio.Future[Admit] | None:
        entry = self._waiters.pop(request_id, None)
        if entry is None:
            return None
        program_id, future = entry
        requests = self._of_program.get(program_id)
        if requests is not None:
            requests.discard(request_id)
            if not requests:
                del self._of_program[program_id]
        return future

    def admit(self, command: Admit) -> None:
        entry = self._waiters.get(command.request_id)
        if entry is not None and not entry[1].done():
            entry[1].set_result(command)

    def fail_program(self, program_id: str, error: Exception) -> None:
        for request_id in self._of_program.pop(program_id, ()):
            entry = self._waiters.pop(request_id, None)
            if entry is not None and not entry[1].done():
                entry[1].set_exception(error)

    def fail_all(self, error: Exception) -> None:
        for _, future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        self._of_program.clear()

    def pending(self) -> int:
        return sum(1 for _, future in self._waiters.values() if not future.done())

    def tracked(self) -> dict[str, int]:
        return {"held_requests": len(self._waiters), "held_programs": len(self._of_program)}
