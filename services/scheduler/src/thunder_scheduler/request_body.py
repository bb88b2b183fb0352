"""What the scheduler reads from an LLM request body before the engine answers.

:func:`analyse` returns a :class:`BodyFacts`: the prompt estimate, the output limit, the
prompt fingerprint (only when a block size is given) and the endpoint the body was sent to.
Pure functions of the body; nothing here knows the policy: the caller passes the block size.

**Prompt estimate** (:func:`estimate_prompt_tokens`), used only until the engine reports exact
usage for the request:

* a body carrying the simulator's trace extension (``thunder_trace``) counts its
  ``prompt_tokens``, the length the simulated engine will prefill (a trace replay's chat
  ``messages`` are a stub);
* token ids sent as such (SGLang ``input_ids``, a completions ``prompt`` of ints) are counted
  exactly;
* text is counted as ``ceil(utf8_bytes / 4)``: OpenAI's rule of thumb "one token is about four
  characters of English text" (help.openai.com, "What are tokens and how to count them"), on
  bytes so non-ASCII text is not under-counted;
* each chat message adds 3 tokens of framing and the reply adds 3 more, as in OpenAI's cookbook
  "How to count tokens with tiktoken" (``tokens_per_message = 3``, ``+3`` reply priming);
  tool schemas count as their compact JSON; non-text parts (images) add nothing.

It errs high for code and non-English text and is replaced by the engine's exact count after
the first response.

**Output limit** (:func:`max_output_tokens`): ``max_completion_tokens``, then ``max_tokens``,
then SGLang's ``sampling_params.max_new_tokens``; None when the body sets none.

**Prompt fingerprint** (:func:`prompt_blocks`), for policies that read it (the ``cache_aware``
router baseline):

* a trace body uses its ``hash_ids``, namespaced by its ``session``;
* any other body is rendered to bytes (chat: ``tools`` then ``messages`` as compact JSON, in
  the client's order, which is the order the chat template renders them in; completions /
  ``/generate``: the prompt text, or the token ids as 4-byte integers; a batch: its first
  prompt) and cut into chunks of ``block_tokens * 4`` bytes (the estimate's 4 bytes per
  token); the last chunk may be partial.

Either way block ``i``'s key is ``blake2b-64(key[i-1] || block i)``, so a key names its whole
prefix (the simulator's page keys chain the same way) and two prompts share keys exactly as far
as they share leading blocks.

**Endpoint** (:func:`request_path`): chat when the body has ``messages``, completions when it
has ``prompt``, else SGLang's ``/generate`` (the pre-restore warm-up resends the body there).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from thunder_core.contract import TRACE_FIELD, EnginePaths, TraceFields

__all__ = [
    "BYTES_PER_TOKEN",
    "PROMPT_BLOCK_TOKENS",
    "BodyFacts",
    "analyse",
    "estimate_prompt_tokens",
    "max_output_tokens",
    "prompt_blocks",
    "request_path",
]

BYTES_PER_TOKEN: Final = 4
"""OpenAI help center: one token is about four characters of English text."""
TOKENS_PER_MESSAGE: Final = 3
"""OpenAI cookbook, "How to count tokens with tiktoken": framing tokens per chat message."""
TOKENS_REPLY_PRIMING: Final = 3
"""Same source: every reply is primed with ``<|start|>assistant<|message|>``."""
PROMPT_BLOCK_TOKENS: Final = 64
"""The shared traces' block size (services/sim-engine/README.md) and the ``cache_aware``
policy's default ``block_tokens``."""
_KEY_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """What one request body tells the scheduler before the engine answers."""

    prompt_tokens_estimate: int
    max_output_tokens: int | None
    prompt_blocks: tuple[int, ...]
    """Empty unless a block size was given."""
    path: str
    """The endpoint the body's shape belongs to."""


def analyse(body: Mapping[str, Any], block_tokens: int | None) -> BodyFacts:
    """All of the above for ``body``; the fingerprint only when ``block_tokens`` is given."""
    return BodyFacts(
        prompt_tokens_estimate=estimate_prompt_tokens(body),
        max_output_tokens=max_output_tokens(body),
        prompt_blocks=() if block_tokens is None else prompt_blocks(body, block_tokens),
        path=request_path(body),
    )


# -- prompt estimate ---------------------------------------------------------------------------


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


def _chat_tokens(messages: list[Any], tools: Any) -> int:
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
    if isinstance(tools, list) and tools:
        # tool schemas are rendered into the prompt by the chat template.
        total += _text_tokens(orjson.dumps(tools).decode())
    return total


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Estimate a request's prompt tokens before the engine answers (module docstring)."""
    trace = body.get(TRACE_FIELD)
    if isinstance(trace, Mapping):  # the simulator's extension states the exact prompt length
        stated = trace.get(TraceFields.PROMPT_TOKENS)
        if isinstance(stated, int) and not isinstance(stated, bool) and stated > 0:
            return stated
    messages = body.get("messages")
    if isinstance(messages, list):
        return _chat_tokens(messages, body.get("tools"))
    input_ids = body.get("input_ids")
    if isinstance(input_ids, list) and input_ids:
        return _prompt_tokens(input_ids)
    for key in ("prompt", "text"):
        if key in body:
            return _prompt_tokens(body[key])
    return 0


# -- output limit ------------------------------------------------------------------------------


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output budget a request asks for (OpenAI or SGLang spelling), if any."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    params = body.get("sampling_params")
    if isinstance(params, Mapping):
        value = params.get("max_new_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


# -- prompt fingerprint ------------------------------------------------------------------------


def _chain(parts: list[bytes]) -> tuple[int, ...]:
    keys: list[int] = []
    previous = b""
    for part in parts:
        digest = hashlib.blake2b(previous + part, digest_size=_KEY_BYTES).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
        previous = digest
    return tuple(keys)


def _ids_bytes(ids: list[Any]) -> bytes:
    return b"".join(
        (item & 0xFFFFFFFF).to_bytes(4, "little") for item in ids if isinstance(item, int)
    )


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


def prompt_blocks(body: Mapping[str, Any], block_tokens: int) -> tuple[int, ...]:
    """The request's prefix fingerprint: chained block keys (module docstring)."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    trace = body.get(TRACE_FIELD)
    if isinstance(trace, Mapping):
        ids = trace.get(TraceFields.HASH_IDS)
        if isinstance(ids, list) and ids:
            session = str(trace.get(TraceFields.SESSION, "")).encode("utf-8")
            return _chain([session + b"\x00" + str(i).encode() for i in ids])
    data = _prompt_bytes(body)
    step = block_tokens * BYTES_PER_TOKEN
    return _chain([data[i:i + step] for i in range(0, len(data), step)])


# -- endpoint ----------------------------------------------------------------------------------


def request_path(body: Mapping[str, Any]) -> str:
    """The endpoint a body was sent to, from its shape."""
    if "messages" in body:
        return EnginePaths.CHAT_COMPLETIONS
    if "prompt" in body:
        return EnginePaths.COMPLETIONS
    return EnginePaths.GENERATE
