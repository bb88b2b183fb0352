"""SGLang's levers: one engine session per program (capability ``sessions``).

:meth:`SGLangLevers.prepare` opens the program's session on its backend before its first
request there carries ``session_id`` (one round trip, once per program and backend; concurrent
requests share it). A migration (``resumed`` on another backend) closes the old one; ``ended``
closes it (``Backend.release_program`` with the session id). A refused open is counted under
``session_open`` and the program runs without a session on that backend; the refusal is
forgotten when the program ends.

A pause whose KV goes to the host tier or is dropped (:class:`KvTier` ``HOST`` / ``GONE``)
closes the session too: ``/close_session`` releases the session's references on its radix
nodes (``managers/scheduler.py::close_session`` -> ``release_radix_session``), and
referenced nodes are the last ones evicted (``mem_cache/unified_cache/components/full.py::
_session_ref_eviction_strategy``), so without it a paused program's KV would outstay the
running programs'. Unreferenced, it is evicted in the engine's own order, and under HiCache an
evicted node that is backed up (write-through) or written back at eviction (write-back) is
demoted to host memory, not dropped (``unified_cache/unified_tree_core.py::
evict_device_leaf``). The next request, or the warm-up before a restore, opens a new session.
``DEVICE`` keeps the session. docs/host-tier.md has the rest.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from thunder_scheduler.backends.base import Backend, BackendKind, SessionLever
from thunder_scheduler.levers.base import (
    LEVER_TIMEOUT_S,
    BaseLevers,
    EngineHints,
    LeverContext,
)
from thunder_scheduling.kv_tiers import KvTier

__all__ = ["SGLangLevers"]

log = logging.getLogger(__name__)


class SGLangLevers(BaseLevers):
    kind = BackendKind.SGLANG

    def __init__(self, ctx: LeverContext) -> None:
        super().__init__(ctx)
        self._sessions: dict[str, tuple[str, str]] = {}  # program -> (backend, session id)
        self._opening: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._refused: dict[str, set[str]] = {}  # program -> backends that refused a session

    def hints(self, program_id: str, backend: Backend) -> EngineHints:
        current = self._sessions.get(program_id)
        return EngineHints(session_id=current[1] if current and current[0] == backend.name
                           else None)

    async def prepare(self, program_id: str, backend: Backend) -> EngineHints:
        if not backend.capabilities.sessions or not isinstance(backend, SessionLever):
            return EngineHints()
        current = self._sessions.get(program_id)
        if current is not None and current[0] == backend.name:
            return EngineHints(session_id=current[1])
        if backend.name in self._refused.get(program_id, ()):
            return EngineHints()
        key = (program_id, backend.name)
        task = self._opening.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._open(program_id, backend), name=f"session-{program_id}"
            )
            self._opening[key] = task
            task.add_done_callback(lambda _: self._opening.pop(key, None))
        return EngineHints(session_id=await asyncio.shield(task))

    async def _open(self, program_id: str, backend: Backend) -> str | None:
        assert isinstance(backend, SessionLever)
        wanted = f"thunder-{program_id}-{uuid.uuid4().hex[:8]}"
        try:
            session_id = await asyncio.wait_for(backend.open_session(wanted), LEVER_TIMEOUT_S)
        except Exception as exc:
            if self.ctx.program_exists(program_id):
                self._refused.setdefault(program_id, set()).add(backend.name)
            self.ctx.metrics.lever_failures.labels("session_open").inc()
            log.warning("opening an SGLang session for %s on %s failed: %s", program_id,
                        backend.name, exc or type(exc).__name__)
            return None
        if not self.ctx.program_exists(program_id):  # it ended while the session opened
            self._close(program_id, (backend.name, session_id))
            return None
        old = self._sessions.get(program_id)
        if old is not None and old[0] != backend.name:
            self._close(program_id, old)  # migrated: the old engine's refs go
        self._sessions[program_id] = (backend.name, session_id)
        return session_id

    def _close(self, program_id: str, session: tuple[str, str]) -> None:
        backend = self.ctx.backends.get(session[0])
        if backend is not None:
            self.ctx.spawn("session_close", backend.release_program(program_id, session[1], None))

    def paused(self, program_id: str, backend: Backend, place: KvTier) -> None:
        if place is KvTier.DEVICE:
            return
        session = self._sessions.pop(program_id, None)
        if session is not None:
            log.debug("paused %s (KV to %s): closing its session %s on %s", program_id,
                      place.value, session[1], session[0])
            self._close(program_id, session)

    def resumed(self, program_id: str, backend: Backend) -> None:
        session = self._sessions.get(program_id)
        if session is not None and session[0] != backend.name:
            del self._sessions[program_id]
            self._close(program_id, session)

    def ended(self, program_id: str, backend: Backend | None) -> None:
        session = self._sessions.pop(program_id, None)
        self._refused.pop(program_id, None)
        if backend is not None:
            session_id = session[1] if session is not None and session[0] == backend.name \
                else None
            self.ctx.spawn("release", backend.release_program(program_id, session_id, None))
        if session is not None and (backend is None or session[0] != backend.name):
            self._close(program_id, session)

    def tracked_programs(self) -> int:
        return len(self._sessions.keys() | self._refused.keys()
                   | {pid for pid, _ in self._opening})
