"""The request gate: the one door between the proxy data plane and the scheduler.

The proxy router (``thunder_scheduler.proxy``) calls, for every LLM request:

1. ``new_request_id(program_id)``: the engine request id, ``<program>:<seq>``
   (``thunder_core.contract.engine_request_id``) or ``thunder-<uuid>`` for an untagged request;
2. ``await acquire(...)``: feeds ``RequestArrived`` to the scheduling core and returns a
   :class:`Placement` once the core admits the request. While the core holds it (its program is
   paused, or not yet admitted) the call waits and never fails, except when the program is
   released meanwhile (409). An unknown model is 404, no healthy backend 503;
3. ``finish(...)``: feeds ``RequestFinished`` with the engine's usage, exactly once per acquired
   request, also when the client left while the request was held (``placement`` is then None).

Untagged requests (no program id) never join a program: they are routed by the core's
``route_untagged`` and are not accounted per program (house style: no shared "default" program).

Pre-response estimate of prompt tokens (:func:`estimate_prompt_tokens`), used only until the
engine reports exact usage for the request:

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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from thunder_scheduler.backends.base import Backend, RequestHints
from thunder_scheduler.core.events import RequestOutcome

__all__ = [
    "GateError",
    "Placement",
    "RequestGate",
    "Usage",
    "estimate_prompt_tokens",
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


@dataclass(frozen=True, slots=True)
class Usage:
    """The engine's usage for one request (``cached_tokens`` None when not reported)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None


class RequestGate(Protocol):
    """What the proxy data plane needs from the control plane."""

    def new_request_id(self, program_id: str | None) -> str:
        """``<program>:<seq>`` for a program's request, ``thunder-<uuid>`` for an untagged one."""
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
