"""Token usage and tool-call detection from engine responses, for OpenAI and SGLang shapes.

OpenAI (``/v1/chat/completions``, ``/v1/completions``; also SGLang, vLLM and llama-server):
``usage.prompt_tokens``, ``usage.completion_tokens`` and, where the engine reports it,
``usage.prompt_tokens_details.cached_tokens`` (SGLang with ``--enable-cache-report``, vLLM
with ``--enable-prompt-tokens-details``, llama-server always). A stream carries ``usage`` in
its last chunk when the request set ``stream_options.include_usage``.

SGLang native (``/generate``): ``meta_info.prompt_tokens``, ``meta_info.completion_tokens``,
``meta_info.cached_tokens``; a batch request answers a list, whose usages are summed. In a
stream every chunk carries the running ``meta_info``, so the last one seen is the total.

A response ends with a tool call when its (first) choice finished with ``finish_reason``
``"tool_calls"`` or its message / deltas carried ``tool_calls`` (some engines finish such a
turn with ``"stop"``). ``/generate`` does not parse tool calls: never a tool call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thunder_scheduler.gate import Usage

__all__ = [
    "choice_tool_call",
    "meta_info_usage",
    "openai_usage",
    "response_usage",
]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def openai_usage(usage: Any) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object, or None when it is missing or malformed."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    cached: int | None = None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        cached = _int(details.get("cached_tokens"))
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)


def meta_info_usage(meta_info: Any) -> Usage | None:
    """``Usage`` from an SGLang ``meta_info`` object, or None when it is missing."""
    if not isinstance(meta_info, Mapping):
        return None
    prompt = _int(meta_info.get("prompt_tokens"))
    completion = _int(meta_info.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion, _int(meta_info.get("cached_tokens")))


def _sum(usages: list[Usage]) -> Usage | None:
    if not usages:
        return None
    cached = [u.cached_tokens for u in usages]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=None if any(c is None for c in cached) else sum(c or 0 for c in cached),
    )


def choice_tool_call(choice: Any) -> bool:
    """Whether one OpenAI choice (a full message or a stream delta) is or ends a tool call."""
    if not isinstance(choice, Mapping):
        return False
    if choice.get("finish_reason") == "tool_calls":
        return True
    for key in ("message", "delta"):
        message = choice.get(key)
        if isinstance(message, Mapping) and message.get("tool_calls"):
            return True
    return False


def response_usage(native: bool, payload: Any) -> tuple[Usage | None, bool]:
    """Usage and ends-with-tool-call of a complete (non-streaming) response body."""
    if native:
        items = payload if isinstance(payload, list) else [payload]
        usages = [
            u
            for item in items
            if isinstance(item, Mapping)
            and (u := meta_info_usage(item.get("meta_info"))) is not None
        ]
        return _sum(usages), False
    if not isinstance(payload, Mapping):
        return None, False
    choices = payload.get("choices")
    tool_call = isinstance(choices, list) and bool(choices) and choice_tool_call(choices[0])
    return openai_usage(payload.get("usage")), tool_call
