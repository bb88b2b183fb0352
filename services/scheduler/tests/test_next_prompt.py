"""The next prompt's known prefix after a tool-call response (``next_prompt``)."""

from __future__ import annotations

import orjson

from thunder_scheduler.next_prompt import (
    extended_prefix_body,
    streamed_tool_call_message,
    tool_call_message,
)
from thunder_scheduler.proxy.streaming import SseScanner

CALLS = [
    {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}},
    {"id": "call_b", "type": "function", "function": {"name": "mul", "arguments": '{"b": 2}'}},
]


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return orjson.dumps({"id": "x", "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_the_message_of_a_whole_response() -> None:
    payload = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": CALLS, "refusal": None}}]}
    assert tool_call_message(payload) == {"role": "assistant", "content": None,
                                          "tool_calls": CALLS}
    text = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    assert tool_call_message(text) is None
    assert tool_call_message({"choices": []}) is None


def test_the_message_accumulated_from_stream_deltas_in_call_order() -> None:
    payloads = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Let me "}), _chunk({"content": "check."}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                "function": {"name": "mul", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "add", "arguments": '{"a"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"b": 2}'}}]}),
        _chunk({}, "tool_calls"),
        orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    ]
    assert streamed_tool_call_message(payloads) == {
        "role": "assistant", "content": "Let me check.", "tool_calls": CALLS}


def test_a_stream_without_call_ids_gives_no_message() -> None:
    payloads = [_chunk({"tool_calls": [{"index": 0, "function": {"name": "add",
                                                                 "arguments": "{}"}}]})]
    assert streamed_tool_call_message(payloads) is None
    assert streamed_tool_call_message([_chunk({"content": "no calls"})]) is None


def test_the_extended_body_keeps_the_prompt_and_drops_output_fields() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": [{}],
            "stream": True, "stream_options": {"include_usage": True}, "n": 2,
            "max_tokens": 50}
    message = {"role": "assistant", "content": None, "tool_calls": CALLS}
    extended = extended_prefix_body(body, message)
    assert extended == {"model": "m", "tools": [{}], "max_tokens": 50,
                        "messages": [{"role": "user", "content": "go"}, message]}
    assert body["messages"] == [{"role": "user", "content": "go"}]  # not mutated
    assert extended_prefix_body({"prompt": "text"}, message) is None


def test_the_scanner_captures_payloads_only_when_asked() -> None:
    stream = b"".join(b"data: " + p + b"\n\n" for p in (
        _chunk({"content": "a"}), _chunk({}, "stop"))) + b"data: [DONE]\n\n"
    capturing = SseScanner(native=False, drop_usage_chunk=False, capture=True)
    assert capturing.feed(stream) == stream
    assert capturing.captured == [_chunk({"content": "a"}), _chunk({}, "stop")]
    assert SseScanner(native=False, drop_usage_chunk=False).captured is None
