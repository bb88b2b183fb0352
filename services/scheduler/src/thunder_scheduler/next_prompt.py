"""The next prompt's known prefix after a response that ends in tool calls (the prompt split).

When a chat response ends in tool calls, the program's next request is, up to the tool
results, already known: the request's ``messages`` plus the assistant's tool-call message. The
driver prefills that prefix on the program's engine while the tool runs (``Driver.prompt_split``;
whether it does is ``thunder_scheduling.prompt_split``).
This module only builds it; pure functions of the request body and the response:

* :func:`tool_call_message`: the assistant message of a complete (non-streaming) chat response,
  when its first choice carries ``tool_calls``;
* :func:`streamed_tool_call_message`: the same message accumulated from a stream's ``data:``
  payloads (``delta.content`` concatenated; each ``delta.tool_calls[i]`` merged by ``index``:
  the first ``id`` / ``type`` / ``function.name`` seen, ``function.arguments`` concatenated).
  The proxy hands the raw payloads over after the last byte went to the client, and only when
  the stream ended in a tool call, so the streaming path itself parses nothing more;
* :func:`extended_prefix_body`: the request body with that message appended and the output
  fields that do not shape the prompt dropped (the prefill lever sets its own).

The message is rebuilt in the OpenAI wire shape (``role``, ``content``, ``tool_calls`` with
``id``, ``type``, ``function.name``, ``function.arguments`` verbatim), which is what clients
send back. A client that re-serialises the arguments differently (other spacing or key order)
shares the prefilled prefix only up to the first differing token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

__all__ = [
    "extended_prefix_body",
    "streamed_tool_call_message",
    "tool_call_message",
]

_OUTPUT_FIELDS: Final = frozenset({"stream", "stream_options", "n"})


def _call(call: Mapping[str, Any]) -> dict[str, Any] | None:
    function = call.get("function")
    if not isinstance(function, Mapping) or not isinstance(call.get("id"), str):
        return None
    return {
        "id": call["id"],
        "type": call.get("type") or "function",
        "function": {"name": function.get("name") or "",
                     "arguments": function.get("arguments") or ""},
    }


def _message(content: Any, calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not calls:
        return None
    return {"role": "assistant", "content": content, "tool_calls": calls}


def tool_call_message(payload: Any) -> dict[str, Any] | None:
    """The assistant tool-call message of a complete chat response, or None."""
    if not isinstance(payload, Mapping):
        return None
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if not isinstance(message, Mapping) or not isinstance(message.get("tool_calls"), list):
        return None
    calls = [c for raw in message["tool_calls"] if isinstance(raw, Mapping)
             if (c := _call(raw)) is not None]
    if len(calls) != len(message["tool_calls"]):
        return None  # a call we cannot rebuild: the prefix would be wrong
    return _message(message.get("content"), calls)


def streamed_tool_call_message(payloads: Iterable[bytes]) -> dict[str, Any] | None:
    """The assistant tool-call message accumulated from a chat stream's payloads, or None."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for payload in payloads:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            continue
        if choices[0].get("index", 0) != 0:
            continue
        delta = choices[0].get("delta")
        if not isinstance(delta, dict):
            continue
        if isinstance(delta.get("content"), str):
            content.append(delta["content"])
        for fragment in delta.get("tool_calls") or ():
            if not isinstance(fragment, dict) or not isinstance(fragment.get("index"), int):
                return None  # calls we cannot put in order
            call = calls.setdefault(fragment["index"], {"id": None, "type": None,
                                                        "name": None, "arguments": []})
            for key in ("id", "type"):
                if call[key] is None and isinstance(fragment.get(key), str):
                    call[key] = fragment[key]
            function = fragment.get("function")
            if isinstance(function, dict):
                if call["name"] is None and isinstance(function.get("name"), str):
                    call["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    call["arguments"].append(function["arguments"])
    built = []
    for index in sorted(calls):
        call = calls[index]
        if not call["id"] or not call["name"]:
            return None
        built.append({"id": call["id"], "type": call["type"] or "function",
                      "function": {"name": call["name"], "arguments": "".join(call["arguments"])}})
    return _message("".join(content) if content else None, built)


def extended_prefix_body(body: Mapping[str, Any], message: Mapping[str, Any]
                         ) -> dict[str, Any] | None:
    """``body`` whose ``messages`` end with ``message`` (None unless ``body`` is a chat body)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    extended = {k: v for k, v in body.items() if k not in _OUTPUT_FIELDS}
    extended["messages"] = [*messages, dict(message)]
    return extended
