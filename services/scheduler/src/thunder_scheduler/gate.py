"""The request gate: the one door between the proxy data plane and the scheduler.

The proxy router (``thunder_scheduler.proxy``) calls, for every LLM request:

1. ``new_request_id(program_id)``: the engine request id, ``<program>:<seq>``
   (``thunder_core.contract.engine_request_id``) or ``thunder-<32 hex digits>`` (128 random
   bits, as a UUID4 has 122, from ``os.urandom``: a sixth of ``uuid4().hex``'s cost) for an
   untagged request;
2. ``await acquire(...)``: feeds ``RequestArrived`` to the scheduling core and returns a
   :class:`Placement` once the core admits the request. While the core holds it (its program is
   paused, or not yet admitted) the call waits and never fails, except when the program is
   released meanwhile (409). An unknown model is 404, no healthy backend 503;
3. ``finish(...)``: feeds ``RequestFinished`` with the engine's usage, exactly once per acquired
   request, also when the client left while the request was held (``placement`` is then None);
4. ``report_upstream_failure(backend, reason)`` when forwarding to the placed backend failed
   to connect (or the connection broke): the backend monitor counts it like a failed poll, so
   a dead engine is marked unhealthy without waiting for the next poll.

A program's placement also carries its SGLang session (``RequestHints.session_id``) when the
backend has capability ``sessions``: the driver opens it before the first request there.

Prompt fingerprint (``RequestArrived.prompt_blocks``), computed only when the scheduling
policy reads it (``Policy.reads_prompt_blocks``; the ``cache_aware`` router baseline), so the
hot path of the other policies pays nothing (:func:`prompt_blocks`):

* a body carrying the simulator's trace extension ``thunder_trace.hash_ids``
  (services/sim-engine/README.md) uses those block ids, namespaced by ``thunder_trace.session``;
* any other body is rendered to bytes (chat: ``tools`` then ``messages`` as compact JSON, in
  the client's order, which is the order the chat template renders them in; completions /
  ``/generate``: the prompt text, or the token ids as 4-byte integers) and cut into chunks of
  ``block_tokens * 4`` bytes (4 bytes per token, the estimate's rule below; the policy's
  ``block_tokens`` is 64, so 256-byte chunks); the last chunk may be partial.

Either way block ``i``'s key is ``blake2b-64(key[i-1] || block i)``, so a key names its whole
prefix (the same chaining as the simulator's page keys) and two prompts share keys exactly as
far as they share leading blocks.

Untagged requests (no program id) never join a program: they are routed by the core's
``route_untagged`` and are not accounted per program (house style: no shared "default" program).

Pre-response estimate of prompt tokens (:func:`estimate_prompt_tokens`), used only until the
engine reports exact usage for the request:

* a body carrying the simulator's trace extension counts ``thunder_trace.prompt_tokens``, the
  length the simulated engine will prefill (a trace replay's chat ``messages`` are a stub);
* token ids sent as such (SGLang ``input_ids``, a completions ``prompt`` of ints) are counted
  exactly;
* text is counted as ``ceil(utf8_bytes / 4)``: OpenAI's rule of thumb "one token is about four
  characters of English text" (help.openai.com, "What are tokens and how to count them"), on
  bytes so non-ASCII text is not under-counted;
* each chat message adds 3 tokens of framing and the reply adds 3 more, as in OpenAI's cookbook
  "How to count tokens with tiktoken" (``tokens_per_message = 3``, ``+3`` reply priming);
  non-text parts (images) add nothing: the engine's usage corrects the estimate.

The estimate errs on the high side for code and non-English text (which tokenise to fewer
bytes per token) and is replaced by the engine's exact count after the first response.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from thunder_core.contract import engine_request_id
from thunder_scheduler.backends.base import Backend, RequestHints
from thunder_scheduling.events import (
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    RequestOutcome,
)

if TYPE_CHECKING:
    from thunder_scheduler.backends.monitor import BackendMonitor
    from thunder_scheduler.driver import Driver
    from thunder_scheduler.metrics import ServiceMetrics

__all__ = [
    "GateError",
    "Placement",
    "RequestGate",
    "SchedulerGate",
    "Usage",
    "estimate_prompt_tokens",
    "prompt_blocks",
]

BYTES_PER_TOKEN: Final = 4
"""OpenAI help center: one token is about four characters of English text."""
TOKENS_PER_MESSAGE: Final = 3
"""OpenAI cookbook, "How to count tokens with tiktoken": framing tokens per chat message."""
TOKENS_REPLY_PRIMING: Final = 3
"""Same source: every reply is primed with ``<|start|>assistant<|message|>``."""


class GateError(Exception):
    """The gate refuses a request: ``status`` is the HTTP status, ``reason`` the JSON reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an admitted request goes, and how to decorate it for that engine."""

    backend: Backend
    hints: RequestHints
    placed_at: float = field(default_factory=time.perf_counter)
    """Wall time of the placement (``perf_counter``): the start of the backend latency."""


@dataclass(frozen=True, slots=True)
class Usage:
    """The engine's usage for one request (``cached_tokens`` None when not reported)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None


class RequestGate(Protocol):
    """What the proxy data plane needs from the control plane."""

    def new_request_id(self, program_id: str | None) -> str:
        """``<program>:<seq>`` for a program's request, ``thunder-<32 hex>`` for an untagged one."""
        ...

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The documented pre-response estimate (see the module docstring)."""
        ...

    async def acquire(
        self,
        program_id: str | None,
        request_id: str,
        body: Mapping[str, Any],
        model: str | None,
    ) -> Placement:
        """Wait until the core admits the request; raises :class:`GateError` (404, 409, 503)."""
        ...

    def finish(
        self,
        placement: Placement | None,
        program_id: str | None,
        request_id: str,
        outcome: RequestOutcome,
        usage: Usage | None,
        ends_with_tool_call: bool,
    ) -> None:
        """The request ended (exactly once per acquired request; also after a held disconnect)."""
        ...

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        """Record the latency the proxy itself added to one request."""
        ...

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        """Forwarding to ``backend`` failed to connect or broke: count it against its health."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """OpenAI model objects: the union of the healthy backends' models."""
        ...


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    total += _text_tokens(text)
            elif isinstance(part, str):
                total += _text_tokens(part)
        return total
    return 0


def _prompt_tokens(prompt: Any) -> int:
    """A completions ``prompt`` / SGLang ``text``: string, token ids, or a list of either."""
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    if isinstance(prompt, list):
        if all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(_prompt_tokens(item) for item in prompt)
    return 0


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Estimate a request's prompt tokens before the engine answers (module docstring)."""
    trace = body.get("thunder_trace")
    if isinstance(trace, Mapping):  # the simulator's extension states the exact prompt length
        stated = trace.get("prompt_tokens")
        if isinstance(stated, int) and not isinstance(stated, bool) and stated > 0:
            return stated
    messages = body.get("messages")
    if isinstance(messages, list):
        total = TOKENS_REPLY_PRIMING
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            total += TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
            tool_calls = message.get("tool_calls")
            if isinstance(tool_calls, list):
                for call in tool_calls:
                    function = call.get("function") if isinstance(call, Mapping) else None
                    if isinstance(function, Mapping):
                        total += _content_tokens(function.get("name"))
                        total += _content_tokens(function.get("arguments"))
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            # tool schemas are rendered into the prompt by the chat template.
            total += _text_tokens(orjson.dumps(tools).decode())
        return total
    input_ids = body.get("input_ids")
    if isinstance(input_ids, list) and input_ids:
        return _prompt_tokens(input_ids)
    for key in ("prompt", "text"):
        if key in body:
            return _prompt_tokens(body[key])
    return 0


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output budget a request asks for (OpenAI or SGLang spelling), if any."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value >= 0:
            return value
    params = body.get("sampling_params")
    if isinstance(params, Mapping):
        value = params.get("max_new_tokens")
        if isinstance(value, int) and value >= 0:
            return value
    return None


PROMPT_BLOCK_TOKENS: Final = 64
"""Block size of the fingerprint when the policy names none: the shared traces' 64-token
blocks (services/sim-engine/README.md) and the cache_aware policy's ``block_tokens``."""
_KEY_BYTES: Final = 8


def _chain(parts: list[bytes]) -> tuple[int, ...]:
    keys: list[int] = []
    previous = b""
    for part in parts:
        digest = hashlib.blake2b(previous + part, digest_size=_KEY_BYTES).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
        previous = digest
    return tuple(keys)


def _prompt_bytes(body: Mapping[str, Any]) -> bytes:
    messages = body.get("messages")
    if isinstance(messages, list):
        tools = body.get("tools")
        head = orjson.dumps(tools) if isinstance(tools, list) and tools else b""
        return head + orjson.dumps(messages)
    input_ids = body.get("input_ids")
    if isinstance(input_ids, list) and input_ids:
        return _ids_bytes(input_ids)
    for key in ("prompt", "text"):
        value = body.get(key)
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, list) and value:
            first = value[0]
            if isinstance(first, str):
                return first.encode("utf-8")  # a batch: the first prompt decides the route
            if isinstance(first, int):
                return _ids_bytes(value)
            if isinstance(first, list):
                return _ids_bytes(first)
    return b""


def _ids_bytes(ids: list[Any]) -> bytes:
    return b"".join(
        (item & 0xFFFFFFFF).to_bytes(4, "little") for item in ids if isinstance(item, int)
    )


def prompt_blocks(
    body: Mapping[str, Any], block_tokens: int = PROMPT_BLOCK_TOKENS
) -> tuple[int, ...]:
    """The request's prefix fingerprint: chained block keys (module docstring)."""
    trace = body.get("thunder_trace")
    if isinstance(trace, Mapping):
        ids = trace.get("hash_ids")
        if isinstance(ids, list) and ids:
            session = str(trace.get("session", "")).encode("utf-8")
            return _chain([session + b"\x00" + str(i).encode() for i in ids])
    data = _prompt_bytes(body)
    step = max(1, block_tokens * BYTES_PER_TOKEN)
    return _chain([data[i:i + step] for i in range(0, len(data), step)])


def request_path(body: Mapping[str, Any]) -> str:
    """The endpoint a body was sent to, from its shape (for the pre-restore warm-up)."""
    if "messages" in body:
        return "/v1/chat/completions"
    if "prompt" in body:
        return "/v1/completions"
    return "/generate"


class SchedulerGate:
    """The :class:`RequestGate` of the live service: the driver's core, the monitor's health.

    Exactly-once ``finish``: a request id is remembered from the moment its ``RequestArrived`` is
    fed until its ``RequestFinished`` is; ``finish`` for an id it does not hold (never acquired,
    refused with 404/503, or finished already) feeds nothing.
    """

    def __init__(
        self,
        driver: Driver,
        monitor: BackendMonitor,
        metrics: ServiceMetrics,
        *,
        on_program_started: Callable[[str], None] | None = None,
    ) -> None:
        self._driver = driver
        self._monitor = monitor
        self._metrics = metrics
        self._on_program_started = on_program_started
        self._arrived: set[str] = set()
        policy = getattr(driver.core, "policy", None)
        self._blocks_tokens: int | None = None
        if getattr(policy, "reads_prompt_blocks", False):
            config = getattr(policy, "config", None)
            block_tokens = getattr(config, "block_tokens", PROMPT_BLOCK_TOKENS)
            self._blocks_tokens = block_tokens if isinstance(block_tokens, int) \
                else PROMPT_BLOCK_TOKENS

    def new_request_id(self, program_id: str | None) -> str:
        if program_id is None:
            return f"thunder-{os.urandom(16).hex()}"
        return engine_request_id(program_id, self._driver.next_request_seq(program_id))

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return estimate_prompt_tokens(body)

    def _healthy(self) -> list[str]:
        healthy = self._monitor.healthy_names()
        if not healthy:
            states = self._monitor.states()
            reasons = "; ".join(
                f"{name}: {state.last_error or 'not probed yet'}" for name, state in states.items()
            )
            raise GateError(503, f"no healthy backend ({reasons or 'none configured'})")
        return healthy

    def _check_model(self, model: str | None, healthy: list[str]) -> None:
        if model is None:
            return
        served = self._served_models(healthy)
        if served and model not in served:
            raise GateError(
                404, f"model {model!r} is not served; available: {', '.join(sorted(served))}"
            )

    def _served_models(self, names: list[str]) -> dict[str, list[str]]:
        served: dict[str, list[str]] = {}
        for name in names:
            info = self._monitor.state(name).info
            for model in info.models if info is not None else ():
                served.setdefault(model, []).append(name)
        return served

    async def acquire(
        self,
        program_id: str | None,
        request_id: str,
        body: Mapping[str, Any],
        model: str | None,
    ) -> Placement:
        healthy = self._healthy()
        self._check_model(model, healthy)
        driver = self._driver
        if program_id is None:
            name = driver.core.route_untagged(driver.now())
            if name is None or name not in driver.backends:
                raise GateError(503, "no backend can take the request now")
            return Placement(driver.backends[name], RequestHints(None, request_id))
        if not driver.core.has_program(program_id):
            # ThunderAgent and plain openai users send requests without a start event.
            driver.feed(ProgramStarted(at=driver.now(), program_id=program_id))
            if self._on_program_started is not None:
                self._on_program_started(program_id)
        driver.remember_body(program_id, request_path(body), body)
        event = RequestArrived(
            at=driver.now(),
            program_id=program_id,
            request_id=request_id,
            prompt_tokens_estimate=estimate_prompt_tokens(body),
            max_output_tokens=max_output_tokens(body),
            prompt_blocks=(
                () if self._blocks_tokens is None else prompt_blocks(body, self._blocks_tokens)
            ),
        )
        future = driver.arrive(program_id, request_id, event)
        self._arrived.add(request_id)
        held_since = time.perf_counter()
        try:
            admit = await future
        finally:
            driver.forget(request_id)
        self._metrics.observe_hold(time.perf_counter() - held_since)
        backend = driver.backends.get(admit.backend)
        if backend is None:  # the core named a backend we do not have: a bug, not the client's
            raise GateError(503, f"scheduler placed the request on unknown backend {admit.backend}")
        priority = admit.priority if admit.priority is not None else driver.priority_of(program_id)
        session_id = (
            await driver.session_for(program_id, backend) if backend.capabilities.sessions
            else None
        )
        hints = RequestHints(
            program_id=program_id,
            request_id=request_id,
            priority=priority,
            session_id=session_id,
            slot_id=driver.slot_of(program_id, backend.name),
        )
        return Placement(backend, hints)

    def finish(
        self,
        placement: Placement | None,
        program_id: str | None,
        request_id: str,
        outcome: RequestOutcome,
        usage: Usage | None,
        ends_with_tool_call: bool,
    ) -> None:
        self._metrics.count_request(outcome.value)
        if placement is not None:
            self._metrics.observe_backend_latency(
                placement.backend.name, time.perf_counter() - placement.placed_at
            )
        if usage is not None:
            self._metrics.observe_usage(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
            )
        if program_id is None or request_id not in self._arrived:
            return
        self._arrived.discard(request_id)
        self._driver.forget(request_id)
        if not self._driver.core.has_program(program_id):
            return  # released while the request ran or was held: nothing left to account
        self._driver.feed(RequestFinished(
            at=self._driver.now(),
            program_id=program_id,
            request_id=request_id,
            outcome=outcome,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            cached_tokens=usage.cached_tokens if usage is not None else None,
            ends_with_tool_call=ends_with_tool_call,
        ))

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        self._metrics.observe_proxy_overhead(seconds, streaming)

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        """Count a failed forward against ``backend`` (the monitor may mark it unhealthy)."""
        if backend not in self._driver.backends:
            return
        self._metrics.upstream_failures.labels(backend).inc()
        self._driver.spawn_task(
            "upstream_failure", self._monitor.report_failure(backend, reason)
        )

    def models(self) -> list[dict[str, Any]]:
        served = self._served_models(self._monitor.healthy_names())
        return [
            {"id": model, "object": "model", "created": 0, "owned_by": "thunder",
             "backends": sorted(names)}
            for model, names in sorted(served.items())
        ]
