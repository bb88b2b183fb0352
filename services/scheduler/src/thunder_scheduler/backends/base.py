"""The engine backend interface: one small Protocol, one implementation per module.

A backend is the scheduler's view of one inference engine (SGLang, vLLM or
llama.cpp's ``llama-server``) reached over HTTP. It answers four questions and
performs a few engine-specific actions:

* ``probe()``: how big is the KV pool (``capacity_tokens``), in what unit is it
  allocated (``page_size_tokens``), which models are served. A backend never
  reports an unknown or infinite capacity: if the engine does not say, ``probe``
  raises :class:`BackendUnavailable` naming the flag that is missing.
* ``load()``: how much of it is in use now (every field optional: engines differ).
* ``decorate()`` / ``request_headers()``: put the engine's own request id (and,
  where supported, priority / session / slot) on a forwarded request, so the
  request can be aborted and attributed.
* ``abort()`` / ``release_program()``: free what the engine lets us free.

The control-plane calls use an injected ``httpx.AsyncClient`` so tests run on
``httpx.MockTransport`` without sockets (house style). The data plane (forwarding
requests) is not a backend concern: the proxy forwards to ``base_url`` with its
own client and only asks the backend how to decorate the body.

Every implementation passes one shared conformance suite
(``tests/test_backend_conformance_*.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BackendCapabilities",
    "BackendInfo",
    "BackendKind",
    "BackendLoad",
    "BackendUnavailable",
    "RequestHints",
    "SessionLever",
    "SlotOffload",
    "SlotOpResult",
    "SlotState",
]


class BackendKind(StrEnum):
    """Engine families we speak to; the value is the CLI spelling (``--backend sglang=URL``)."""

    SGLANG = "sglang"
    VLLM = "vllm"
    LLAMACPP = "llamacpp"


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    """What an engine lets the scheduler do beyond plain forwarding."""

    abort_by_request_id: bool
    """SGLang ``POST /abort_request {"rid"}``. vLLM: False (abort = close the connection)."""
    request_priority: bool
    """Body field ``priority`` is honoured (SGLang, vLLM with a priority policy)."""
    sessions: bool
    """SGLang ``/open_session`` / ``/close_session``."""
    slot_offload: bool
    """llama.cpp ``/slots/{id}?action=save|restore|erase``; implements :class:`SlotOffload`."""
    prefix_warmup: bool
    """A zero/one-token prefill warms a prefix (the next request reports it cached)."""
    cached_tokens_in_usage: bool
    """``usage.prompt_tokens_details.cached_tokens`` is filled in responses."""
    hierarchical_cache: bool = False
    """SGLang HiCache: KV evicted from the device goes to a host pool and a prefix match there
    loads it back (``BackendInfo.host_capacity_tokens`` > 0)."""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What ``probe()`` learned; capacity is always finite and positive."""

    capacity_tokens: int
    """KV pool size in tokens (SGLang ``max_total_num_tokens`` summed over DP ranks;
    vLLM ``block_size * num_gpu_blocks``; llama.cpp ``n_ctx`` summed over slots)."""
    page_size_tokens: int
    """Allocation granularity (SGLang ``page_size``, vLLM ``block_size``, llama.cpp 1)."""
    models: tuple[str, ...]
    """Model names the engine answers to (``/v1/models`` ids or served-model names)."""
    max_context_tokens: int | None
    """Longest context one request may use, when the engine says."""
    host_capacity_tokens: int = 0
    """KV tokens the engine can keep outside its device pool and load back (SGLang HiCache's
    host pool; llama.cpp's saved slots, when slot offload is on); 0: no host tier."""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The engine's own answer(s), for ``/ready`` and debugging."""


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """Current load; ``None`` means the engine did not report that number."""

    used_tokens: int | None
    running_requests: int | None
    waiting_requests: int | None
    cache_hit_rate: float | None
    """Fraction in [0, 1]: engine-reported, or cached / prompt tokens so far."""
    prompt_tokens_total: float | None
    """Counter: prompt tokens seen since the engine started."""
    cached_tokens_total: float | None
    """Counter: prompt tokens served from the prefix cache since the engine started."""


@dataclass(frozen=True, slots=True)
class RequestHints:
    """What the proxy knows about a request it is about to forward."""

    program_id: str | None
    request_id: str
    """Engine request id, ``<program>:<seq>`` by the proxy's convention."""
    priority: int | None = None
    session_id: str | None = None
    slot_id: int | None = None


@dataclass(frozen=True, slots=True)
class SlotOpResult:
    """Result of a llama.cpp slot save or restore."""

    slot_id: int
    filename: str
    n_tokens: int
    """Tokens saved (``n_saved``) or restored (``n_restored``)."""
    n_bytes: int
    """Bytes written (``n_written``) or read (``n_read``)."""
    duration_ms: float
    """Engine-reported ``timings.save_ms`` / ``timings.restore_ms``."""


@dataclass(frozen=True, slots=True)
class SlotState:
    """One llama.cpp slot as ``GET /slots`` reports it."""

    slot_id: int
    n_ctx_tokens: int
    is_processing: bool


class BackendUnavailable(Exception):
    """The engine cannot be used: down, not ready, or not telling us its capacity.

    The message always names the backend and the reason.
    """

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r}: {reason}")
        self.backend = backend
        self.reason = reason


@runtime_checkable
class Backend(Protocol):
    """One inference engine as the scheduler sees it."""

    name: str
    kind: BackendKind
    base_url: str
    capabilities: BackendCapabilities

    async def probe(self) -> BackendInfo:
        """Capacity, page size and models; raises :class:`BackendUnavailable`."""
        ...

    async def load(self) -> BackendLoad:
        """Current load; raises :class:`BackendUnavailable`."""
        ...

    def decorate(self, path: str, body: dict[str, Any], hints: RequestHints) -> dict[str, Any]:
        """Add the engine's id/priority/session/slot fields to ``body`` in place; return it."""
        ...

    def request_headers(self, hints: RequestHints) -> dict[str, str]:
        """Extra headers for a forwarded request (e.g. vLLM ``X-Request-Id``)."""
        ...

    async def abort(self, request_id: str) -> None:
        """Abort one request by engine id where the engine allows; else a documented no-op."""
        ...

    async def release_program(
        self, program_id: str, session_id: str | None, slot_id: int | None
    ) -> None:
        """Free what the engine lets us free for a finished program."""
        ...

    async def aclose(self) -> None:
        """Release resources the backend owns (not the injected client)."""
        ...


@runtime_checkable
class SessionLever(Protocol):
    """Engine sessions (SGLang ``/open_session``, capability ``sessions``); closed by
    ``Backend.release_program(program_id, session_id, None)``."""

    async def open_session(self, session_id: str) -> str:
        """Open a session named ``session_id``; returns the engine's session id."""
        ...


@runtime_checkable
class SlotOffload(Protocol):
    """Per-slot KV save / restore / erase (llama.cpp, capability ``slot_offload``)."""

    async def save_slot(self, slot_id: int, filename: str) -> SlotOpResult: ...

    async def restore_slot(self, slot_id: int, filename: str) -> SlotOpResult: ...

    async def erase_slot(self, slot_id: int) -> None: ...

    async def slots(self) -> list[SlotState]: ...
