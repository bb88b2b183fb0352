"""Commands returned by the scheduling core: imperative decisions the driver carries out.

The live driver (``thunder_scheduler.driver``) turns them into I/O (forward a request, park it,
call an engine lever, tell the tool manager); the simulator's virtual loop applies them to
simulated engines. The core never performs them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.kv_tiers import KvTier


@dataclass(frozen=True, slots=True)
class Admit:
    """Forward request ``request_id`` of ``program_id`` to ``backend`` now.

    ``priority`` is the engine priority to send (None: leave the body's own / engine default).
    """

    program_id: str
    request_id: str
    backend: str
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Park the request at the proxy (never fail it): its program is paused or not yet admitted.

    A later ``Admit`` for the same ``request_id`` releases it.
    """

    program_id: str
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    """The program was paused on ``backend``: its next requests are held; its KV may be evicted.

    Emitted when the decision takes effect (a request in flight is never cut: a program marked
    for pause is paused when its response ends).
    """

    program_id: str
    backend: str
    context_tokens: int
    reason: str = "overflow"
    """``overflow`` (the backend's KV is over its watermark) or ``backend_unhealthy`` (the
    backend went away: skip engine levers such as slot save)."""
    kv_tier: KvTier | None = None
    """Where the core put the program's KV: ``DEVICE`` (left there), ``HOST`` (the backend's
    host tier: HiCache host pool, llama.cpp saved slot; loaded back by a ``Prewarm`` before the
    program returns) or ``GONE`` (recomputed); None when the core does not say (the driver
    then offloads where the engine has a host tier)."""


@dataclass(frozen=True, slots=True)
class Offload:
    """A program that stays placed (acting: in a tool) has its KV moved to ``backend``'s host
    tier (InferCept's swap-out during an interception); a ``Prewarm`` before its predicted
    return loads it back."""

    program_id: str
    backend: str
    context_tokens: int


@dataclass(frozen=True, slots=True)
class Resume:
    """The program is active again on ``backend`` (``migrated`` when it differs from before)."""

    program_id: str
    backend: str
    previous_backend: str | None
    migrated: bool


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Warm the program's prefix on ``backend`` with a one-token prefill before it returns."""

    program_id: str
    backend: str


@dataclass(frozen=True, slots=True)
class SetPriority:
    """Send later requests of the program with this engine priority (eviction/retraction order)."""

    program_id: str
    priority: int


@dataclass(frozen=True, slots=True)
class Release:
    """The program is gone (ended or its lease expired): free its KV and runtimes."""

    program_id: str
    backend: str | None
    reason: str
    held_request_ids: tuple[str, ...] = ()
    """Requests still parked at the proxy: the driver fails them (the program is gone)."""


Command = Admit | Hold | Pause | Offload | Resume | Prewarm | SetPriority | Release

__all__ = [
    "Admit", "Command", "Hold", "Offload", "Pause", "Prewarm", "Release", "Resume", "SetPriority",
]
