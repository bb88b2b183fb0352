"""The SSE scanner: usage and tool calls found, the usage-only chunk dropped, bytes otherwise
untouched, however the network splits the stream."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from thunder_scheduler.gate import Usage
from thunder_scheduler.proxy.streaming import SseScanner
from thunder_testkit.proxy import chat_chunk, sse, usage_chunk

EVENTS = sse(chat_chunk("Hel"), chat_chunk("lo"), chat_chunk(finish="stop"),
             usage_chunk(40, 3, 32), "[DONE]")
STREAM = b"".join(EVENTS)
WITHOUT_USAGE = EVENTS[0] + EVENTS[1] + EVENTS[2] + EVENTS[4]


def _feed(scanner: SseScanner, pieces: list[bytes]) -> bytes:
    return b"".join(scanner.feed(piece) for piece in pieces) + scanner.close()


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_usage_chunk_is_dropped_at_any_split(cuts: list[int]) -> None:
    scanner = SseScanner(native=False, drop_usage_chunk=True)
    assert _feed(scanner, _split(STREAM, cuts)) == WITHOUT_USAGE
    assert scanner.usage == Usage(40, 3, 32)


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_pass_through_forwards_every_piece_unchanged(cuts: list[int]) -> None:
    scanner = SseScanner(native=False, drop_usage_chunk=False)
    pieces = _split(STREAM, cuts)
    assert [scanner.feed(piece) for piece in pieces] == pieces
    assert scanner.close() == b""
    assert scanner.usage == Usage(40, 3, 32)
    assert scanner.ends_with_tool_call is False


def test_crlf_comments_and_unterminated_last_event() -> None:
    stream = (b": keep-alive\r\n\r\n" + b"data: " + orjson.dumps(chat_chunk("a")) + b"\r\n\r\n"
              + b"data: " + orjson.dumps(usage_chunk(5, 1, None)) + b"\r\n\r\n"
              + b"data: [DONE]")
    scanner = SseScanner(native=False, drop_usage_chunk=True)
    out = _feed(scanner, [stream[i : i + 3] for i in range(0, len(stream), 3)])
    assert out == (b": keep-alive\r\n\r\n" + b"data: " + orjson.dumps(chat_chunk("a"))
                   + b"\r\n\r\n" + b"data: [DONE]")
    assert scanner.usage == Usage(5, 1, None)


def test_usage_riding_on_a_content_chunk_is_kept_and_counted() -> None:
    chunk = chat_chunk("x", finish="stop")
    chunk["usage"] = usage_chunk(7, 1, 4)["usage"]
    stream = b"".join(sse(chunk, "[DONE]"))
    scanner = SseScanner(native=False, drop_usage_chunk=True)
    assert _feed(scanner, [stream]) == stream
    assert scanner.usage == Usage(7, 1, 4)


def test_tool_call_deltas_and_finish_reason() -> None:
    call = {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                            "function": {"name": "grep", "arguments": ""}}]}
    scanner = SseScanner(native=False, drop_usage_chunk=False)
    _feed(scanner, sse(chat_chunk(**call), "[DONE]"))
    assert scanner.ends_with_tool_call is True
    scanner = SseScanner(native=False, drop_usage_chunk=False)
    _feed(scanner, sse(chat_chunk("x"), chat_chunk(finish="tool_calls")))
    assert scanner.ends_with_tool_call is True


def test_native_generate_takes_the_last_meta_info() -> None:
    metas = [{"prompt_tokens": 10, "completion_tokens": n, "cached_tokens": 6} for n in (1, 2, 3)]
    stream = b"".join(sse(*({"text": "t", "meta_info": m} for m in metas), "[DONE]"))
    scanner = SseScanner(native=True, drop_usage_chunk=True)  # never drops on /generate
    assert _feed(scanner, [stream[:50], stream[50:]]) == stream
    assert scanner.usage == Usage(10, 3, 6)
