"""The engine-lever interface: what the driver asks of an engine beyond forwarding requests.

A lever set is one object per engine kind (``levers/__init__.py`` picks it by
``Backend.kind``). The driver calls it at each point of a program's life where an engine can
help; every call is best effort: engine I/O runs as a background task through the injected
``spawn`` (timed out, failures counted under the lever's name and logged, never raised), so a
lever never blocks the event loop or fails a request.

=================  ===========================================  ===============================
driver calls       when                                         what the shipped levers do
=================  ===========================================  ===============================
``admitted``       the core placed a request of the program     llama.cpp: pin a slot
``prepare``        before a request is forwarded (awaited)      SGLang: open the session
``hints``          decorating a request for the engine          session id / slot id
``paused``         ``Pause``: the program leaves the engine;    by ``KvTier``:  host: llama.cpp
                   where its KV goes (``KvTier``); also        saves its slot, SGLang releases
                   ``Offload`` (an acting program's KV to       its session refs (HiCache
                   host, place ``HOST``)                        demotes it to host first)
``load_back``      ``Prewarm``: before it returns, first        llama.cpp: restore its saved
                   (True: loaded, no prefill needed)            slot; others: False
``resumed``        ``Resume``: it comes back (maybe elsewhere)  llama.cpp: restore if not yet;
                                                                SGLang: close a session left
                                                                behind
``prefill``        ``Prewarm`` when ``load_back`` did not, and  a prefill-only request
                   the prompt split: the next prefix while a    (``prefill.py``; on SGLang
                   tool runs                                    HiCache it loads host KV back)
``ended``          ``Release``: the program is gone             free its engine state (close
                                                                session, erase slot) and
                                                                forget it
=================  ===========================================  ===============================

The host tier (docs/host-tier.md) goes through ``paused`` (where the KV goes) and
``load_back`` / ``prefill`` (bringing it back ahead of need). The prompt split
(``Driver.prompt_split``, docs/prompt-split.md) goes through ``prefill``.

Per-program state a lever keeps lives in the lever and is dropped by ``ended``;
``tracked_programs()`` says how many programs it holds state for (it must reach 0 when every
program has ended: the driver's boundedness test checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

from thunder_scheduler.backends.base import Backend, BackendKind, RequestHints
from thunder_scheduler.levers.prefill import send_prefill
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.kv_tiers import KvTier

__all__ = [
    "LEVER_TIMEOUT_S",
    "BaseLevers",
    "EngineHints",
    "EngineLevers",
    "LeverContext",
    "PrefillRequest",
]

log = logging.getLogger(__name__)

LEVER_TIMEOUT_S: Final = 30.0
"""Upper bound on one engine lever call (prefill, session open, slot save/restore, release)."""


@dataclass(frozen=True, slots=True)
class EngineHints:
    """Per-program engine state a forwarded request carries."""

    session_id: str | None = None
    slot_id: int | None = None


@dataclass(frozen=True, slots=True)
class PrefillRequest:
    """A prefill-only request: compute ``body``'s prompt into the engine's cache, one output
    token (``path`` is the endpoint the body belongs to)."""

    path: str
    body: Mapping[str, Any]
    request_id: str
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class LeverContext:
    """What levers are built with (shared by every engine kind)."""

    backends: Mapping[str, Backend]
    spawn: Callable[[str, Awaitable[Any]], None]
    """Run a lever call in the background, best effort (timed out, failures counted)."""
    metrics: ServiceMetrics
    program_exists: Callable[[str], bool]
    """Whether the core still knows a program (a lever finishing late checks it)."""
    http: httpx.AsyncClient | None = None
    """The control-plane client prefill-only requests go through (None: no prefills)."""
    slot_offload: bool = False
    """llama.cpp: save / restore slots on pause / resume (``--llamacpp-slot-offload``)."""
    total_slots: Callable[[str], int | None] = lambda name: None
    """llama.cpp: the slot count of a backend, once probed."""


class EngineLevers(Protocol):
    """The levers of one engine kind (see the module docstring for when each is called)."""

    kind: BackendKind

    def admitted(self, program_id: str, backend: Backend) -> None: ...

    async def prepare(self, program_id: str, backend: Backend) -> EngineHints: ...

    def hints(self, program_id: str, backend: Backend) -> EngineHints: ...

    def paused(self, program_id: str, backend: Backend, place: KvTier) -> None: ...

    def load_back(self, program_id: str, backend: Backend) -> bool:
        """Bring the program's offloaded KV back to ``backend``'s device by an engine call of
        its own; False when this engine has none (the driver sends a prefill instead)."""
        ...

    def resumed(self, program_id: str, backend: Backend) -> None: ...

    def prefill(self, program_id: str, backend: Backend, request: PrefillRequest) -> None: ...

    def ended(self, program_id: str, backend: Backend | None) -> None:
        """Free the program's engine state; ``backend`` is where it ran when it is of this
        lever's kind (then ``Backend.release_program`` is called there exactly once), else
        None (state the lever holds elsewhere is still freed)."""
        ...

    def tracked_programs(self) -> int: ...


class BaseLevers:
    """Levers every engine has: prefill-only requests and ``release_program`` at the end
    (vLLM needs nothing more: its prefix cache holds nothing per program)."""

    kind: BackendKind = BackendKind.VLLM

    def __init__(self, ctx: LeverContext) -> None:
        self.ctx = ctx

    def admitted(self, program_id: str, backend: Backend) -> None:
        return None

    async def prepare(self, program_id: str, backend: Backend) -> EngineHints:
        return self.hints(program_id, backend)

    def hints(self, program_id: str, backend: Backend) -> EngineHints:
        return EngineHints()

    def paused(self, program_id: str, backend: Backend, place: KvTier) -> None:
        return None

    def load_back(self, program_id: str, backend: Backend) -> bool:
        return False

    def resumed(self, program_id: str, backend: Backend) -> None:
        return None

    def prefill(self, program_id: str, backend: Backend, request: PrefillRequest) -> None:
        http = self.ctx.http
        if http is None or not backend.capabilities.prefix_warmup:
            log.debug("no prefill for %s on %s", program_id, backend.name)
            return
        slot_id = self.hints(program_id, backend).slot_id
        hints = RequestHints(program_id, request.request_id, request.priority, None, slot_id)

        async def send() -> None:
            await send_prefill(http, backend, request.path, request.body, hints, LEVER_TIMEOUT_S)
            self.ctx.metrics.prewarms.inc()

        self.ctx.spawn("prewarm", send())

    def ended(self, program_id: str, backend: Backend | None) -> None:
        if backend is not None:
            self.ctx.spawn("release", backend.release_program(program_id, None, None))

    def tracked_programs(self) -> int:
        return 0
