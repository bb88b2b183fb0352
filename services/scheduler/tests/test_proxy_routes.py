"""The proxy router against a scripted fake engine (``FakeUpstream``), in process, no sockets.

Each test drives one path a user relies on: what reaches the engine (identity stripped,
engine request id added, usage requested), what reaches the client (usage chunk removed
unless asked for, engine errors passed through), and what the scheduler is told (finish
exactly once with the right outcome and usage, on every path).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from thunder_scheduler.backends.vllm import VLLMBackend
from thunder_scheduler.gate import Usage
from thunder_scheduling.events import RequestOutcome
from thunder_testkit.proxy import (
    ENGINE_URL,
    AbortRecorder,
    FakeUpstream,
    Forwarded,
    RecordingGate,
    Script,
    UpstreamTimeout,
    UpstreamUnreachable,
    call_asgi,
    chat_chunk,
    make_app,
    sglang_backend,
    sse,
    usage_chunk,
)

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]

COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "model": "smollm2",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
              "prompt_tokens_details": {"cached_tokens": 8}},
}


def _setup(script: Script) -> tuple[RecordingGate, FakeUpstream, AbortRecorder]:
    recorder = AbortRecorder()
    gate = RecordingGate(sglang_backend(recorder))
    return gate, FakeUpstream(script), recorder


async def test_non_streaming_forwards_decorated_body_and_reports_usage() -> None:
    raw = orjson.dumps(COMPLETION) + b"  "  # odd spacing: the bytes must pass untouched
    gate, upstream, _ = _setup(Script(chunks=[raw]))
    app = make_app(gate, upstream)
    body = {"model": "smollm2", "messages": MESSAGES, "program_id": "prog-a",
            "extra_body": {"program_id": "prog-a"}, "temperature": 0}
    result = await call_asgi(app, CHAT, body, headers={
        "X-Thunder-Program-Id": "prog-a",
        "Authorization": "Bearer client-key",
        "Connection": "keep-alive, x-hop",
        "X-Hop": "1",
        "X-Custom": "kept",
    })

    assert result.status == 200
    assert result.body == raw
    assert result.headers["x-thunder-request-id"] == "prog-a:1"
    [sent] = upstream.requests
    assert sent.url == f"{ENGINE_URL}/v1/chat/completions"
    assert sent.body == {"model": "smollm2", "messages": MESSAGES, "temperature": 0,
                         "rid": "prog-a:1"}
    lowered = {k.lower(): v for k, v in sent.headers.items()}
    assert "x-thunder-program-id" not in lowered
    assert "authorization" not in lowered
    assert "x-hop" not in lowered and "connection" not in lowered
    assert lowered["x-custom"] == "kept"
    assert lowered["accept-encoding"] == "identity"
    [fin] = gate.finished
    assert (fin.program_id, fin.request_id, fin.outcome) == ("prog-a", "prog-a:1",
                                                             RequestOutcome.OK)
    assert fin.usage == Usage(12, 2, 8)
    assert fin.ends_with_tool_call is False
    assert upstream.closed == [True]
    [(overhead_s, streaming)] = gate.overheads
    assert 0 <= overhead_s < 1.0 and streaming is False


async def test_stream_requests_usage_and_hides_it_from_a_client_that_did_not_ask() -> None:
    events = sse(chat_chunk("hel"), chat_chunk("lo", finish="stop"),
                 usage_chunk(20, 2, 16), "[DONE]")
    gate, upstream, _ = _setup(Script(chunks=events, content_type="text/event-stream"))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES, "stream": True},
                             headers={"X-Thunder-Program-Id": "prog-b"})

    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.body == events[0] + events[1] + events[3]
    [fin] = gate.finished
    assert fin.outcome is RequestOutcome.OK
    assert fin.usage == Usage(20, 2, 16)
    assert gate.overheads[0][1] is True


async def test_stream_passes_the_usage_chunk_through_when_the_client_asked() -> None:
    events = sse(chat_chunk("a"), chat_chunk(finish="stop"), usage_chunk(5, 1, None), "[DONE]")
    # engines may split events across network reads: re-chunk at odd boundaries.
    joined = b"".join(events)
    pieces = [joined[i : i + 7] for i in range(0, len(joined), 7)]
    gate, upstream, _ = _setup(Script(chunks=pieces, content_type="text/event-stream"))
    result = await call_asgi(make_app(gate, upstream), CHAT, {
        "model": "smollm2", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True},
    })
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    assert result.body == joined
    assert result.chunks[:-1] == pieces  # forwarded piece by piece, not buffered
    assert gate.finished[0].usage == Usage(5, 1, None)


async def test_split_usage_chunk_is_still_removed() -> None:
    events = sse(chat_chunk("a", finish="stop"), usage_chunk(5, 1, 2), "[DONE]")
    joined = b"".join(events)
    pieces = [joined[i : i + 5] for i in range(0, len(joined), 5)]
    gate, upstream, _ = _setup(Script(chunks=pieces, content_type="text/event-stream"))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES, "stream": True})
    assert result.body == events[0] + events[2]
    assert gate.finished[0].usage == Usage(5, 1, 2)


async def test_tool_call_endings_are_detected_streaming_and_not() -> None:
    delta = {"tool_calls": [{"index": 0, "id": "t1", "type": "function",
                             "function": {"name": "ls", "arguments": "{}"}}]}
    events = sse(chat_chunk(**delta), chat_chunk(finish="tool_calls"), "[DONE]")
    gate, upstream, _ = _setup(Script(chunks=events, content_type="text/event-stream"))
    app = make_app(gate, upstream)
    await call_asgi(app, CHAT, {"model": "smollm2", "messages": MESSAGES, "stream": True})
    assert gate.finished[0].ends_with_tool_call is True
    assert gate.finished[0].usage is None  # this engine reported none

    message = {"role": "assistant", "content": None, "tool_calls": delta["tool_calls"]}
    whole = {**COMPLETION, "choices": [{"index": 0, "message": message,
                                        "finish_reason": "tool_calls"}]}
    upstream.script = Script(chunks=[orjson.dumps(whole)])
    await call_asgi(app, CHAT, {"model": "smollm2", "messages": MESSAGES})
    assert gate.finished[1].ends_with_tool_call is True


async def test_sglang_native_generate_usage_from_meta_info() -> None:
    meta = {"prompt_tokens": 30, "completion_tokens": 3, "cached_tokens": 24,
            "finish_reason": {"type": "length"}}
    gate, upstream, _ = _setup(Script(chunks=[orjson.dumps({"text": "abc", "meta_info": meta})]))
    app = make_app(gate, upstream)
    result = await call_asgi(app, "/generate", {"text": "hello", "program_id": "p",
                                                "sampling_params": {"max_new_tokens": 3}})
    assert result.status == 200
    sent = upstream.requests[0]
    assert sent.url == f"{ENGINE_URL}/generate"
    assert sent.body == {"text": "hello", "sampling_params": {"max_new_tokens": 3}, "rid": "p:1"}
    assert gate.finished[0].usage == Usage(30, 3, 24)

    first = {"text": "a", "meta_info": {**meta, "completion_tokens": 1}}
    last = {"text": "abc", "meta_info": meta}
    upstream.script = Script(chunks=sse(first, last, "[DONE]"), content_type="text/event-stream")
    result = await call_asgi(app, "/generate", {"text": "hello", "stream": True})
    assert "stream_options" not in upstream.requests[1].body
    assert result.body == b"".join(sse(first, last, "[DONE]"))
    assert gate.finished[1].usage == Usage(30, 3, 24)


async def test_engine_error_passes_through_with_status_and_body() -> None:
    error = b'{"error":{"message":"context too long","code":400}}'
    gate, upstream, _ = _setup(Script(status=400, chunks=[error]))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES, "stream": True})
    assert result.status == 400
    assert result.body == error
    [fin] = gate.finished
    assert fin.outcome is RequestOutcome.ERROR
    assert gate.overheads == []


@pytest.mark.parametrize(
    ("failure", "status", "words"),
    [(UpstreamUnreachable("connection refused"), 502, "unreachable"),
     (UpstreamTimeout("connect timeout"), 504, "timed out")],
)
async def test_upstream_failure_answers_json_naming_the_backend(
    failure: Exception, status: int, words: str
) -> None:
    gate, upstream, _ = _setup(Script(fail_on_send=failure))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES},
                             headers={"X-Thunder-Program-Id": "p"})
    assert result.status == status
    reason = result.json()["error"]["message"]
    assert "sglang-0" in reason and words in reason
    [fin] = gate.finished
    assert fin.outcome is RequestOutcome.ERROR and fin.request_id == "p:1"
    # a refused connection counts against the backend's health; a slow engine does not
    expected = [("sglang-0", "connection refused")] if status == 502 else []
    assert gate.upstream_failures == expected


async def test_connection_broken_while_reading_is_502_and_reported() -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{", b"}"],
                                      fail_mid_body=UpstreamUnreachable("reset by peer")))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES})
    assert result.status == 502 and "sglang-0" in result.json()["error"]["message"]
    assert gate.upstream_failures == [("sglang-0", "reset by peer")]


async def test_timeout_while_reading_a_complete_response_is_504() -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{", b"}"], fail_mid_body=UpstreamTimeout("read")))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES})
    assert result.status == 504
    assert [f.outcome for f in gate.finished] == [RequestOutcome.ERROR]
    assert gate.upstream_failures == []


async def test_engine_dying_mid_stream_ends_the_stream_with_an_error_event() -> None:
    events = sse(chat_chunk("a"), chat_chunk("b"))
    gate, upstream, _ = _setup(Script(chunks=events, content_type="text/event-stream",
                                      fail_mid_body=UpstreamUnreachable("reset")))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES, "stream": True})
    assert result.status == 200
    assert result.chunks[0] == events[0]
    last = orjson.loads(result.chunks[-1].removeprefix(b"data: "))
    assert "sglang-0" in last["error"]["message"]
    assert last["error"]["type"] == "server_error"
    assert [f.outcome for f in gate.finished] == [RequestOutcome.ERROR]
    assert gate.upstream_failures == [("sglang-0", "reset")]


async def test_client_leaving_mid_stream_aborts_upstream_and_finishes_disconnected() -> None:
    stall = asyncio.Event()
    events = sse(chat_chunk("a"), chat_chunk("b"), "[DONE]")
    gate, upstream, recorder = _setup(Script(chunks=events, content_type="text/event-stream",
                                             stall=stall))
    result = await call_asgi(
        make_app(gate, upstream), CHAT,
        {"model": "smollm2", "messages": MESSAGES, "stream": True},
        headers={"X-Thunder-Program-Id": "prog-c"},
        leave_when=lambda r: len(r.chunks) >= 1,
    )
    assert result.chunks == [events[0]]
    assert upstream.closed == [False]          # connection closed before its end
    assert recorder.aborted == ["prog-c:1"]    # and SGLang told by rid
    [fin] = gate.finished
    assert fin.outcome is RequestOutcome.DISCONNECTED
    assert fin.placement is not None and fin.usage is None


async def test_client_leaving_while_waiting_for_a_complete_response() -> None:
    stall = asyncio.Event()
    gate, upstream, recorder = _setup(Script(chunks=[b"{", b"}"], stall=stall))
    leave = asyncio.Event()
    task = asyncio.create_task(call_asgi(
        make_app(gate, upstream), CHAT, {"model": "smollm2", "messages": MESSAGES},
        headers={"X-Thunder-Program-Id": "prog-d"}, leave=leave,
    ))
    await asyncio.wait_for(upstream.sent.wait(), 5)
    leave.set()
    await asyncio.wait_for(task, 5)
    assert upstream.closed == [False]
    assert recorder.aborted == ["prog-d:1"]
    assert [f.outcome for f in gate.finished] == [RequestOutcome.DISCONNECTED]


async def test_client_leaving_while_its_program_is_held() -> None:
    gate, upstream, recorder = _setup(Script(chunks=[b"{}"]))
    gate.hold = asyncio.Event()
    leave = asyncio.Event()
    task = asyncio.create_task(call_asgi(
        make_app(gate, upstream), CHAT, {"model": "smollm2", "messages": MESSAGES},
        headers={"X-Thunder-Program-Id": "prog-e"}, leave=leave,
    ))
    await asyncio.wait_for(gate.holding.wait(), 5)
    leave.set()
    await asyncio.wait_for(task, 5)
    assert upstream.requests == []
    assert recorder.aborted == []
    [fin] = gate.finished
    assert fin.placement is None and fin.outcome is RequestOutcome.DISCONNECTED
    assert fin.request_id == "prog-e:1"


async def test_vllm_gets_request_id_in_body_and_header_and_untagged_requests_pass() -> None:
    backend = VLLMBackend("vllm-0", ENGINE_URL, httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500))))
    gate = RecordingGate(backend)
    upstream = FakeUpstream(Script(chunks=[orjson.dumps(COMPLETION)]))
    await call_asgi(make_app(gate, upstream), "/v1/completions",
                    {"model": "smollm2", "prompt": "once upon"})
    sent = upstream.requests[0]
    assert sent.body == {"model": "smollm2", "prompt": "once upon", "request_id": "thunder-1"}
    assert sent.headers["X-Request-Id"] == "thunder-1"
    assert gate.finished[0].program_id is None


@pytest.mark.parametrize(("headers", "extra", "program"), [
    ({"X-Session-ID": "skyrl-1"}, {}, "skyrl-1"),
    ({"x-dynamo-session-id": "dyn-1"}, {}, "dyn-1"),
    ({}, {"nvext": {"agent_context": {"session_id": "nv-1"}}}, "nv-1"),
])
async def test_thunderagents_session_ids_attribute_the_request(
    headers: dict[str, str], extra: dict[str, Any], program: str
) -> None:
    """A client that ThunderAgent's proxy would schedule by a session id is scheduled here too
    (the id names the program); the body reaches the engine as it came."""
    gate, upstream, _ = _setup(Script(chunks=[orjson.dumps(COMPLETION)]))
    body = {"model": "smollm2", "messages": MESSAGES, **extra}
    result = await call_asgi(make_app(gate, upstream), CHAT, body, headers=headers)
    assert result.status == 200
    assert gate.finished[0].program_id == program
    assert result.headers["x-thunder-request-id"] == f"{program}:1"
    assert upstream.requests[0].body == {**body, "rid": f"{program}:1"}


async def test_models_lists_what_the_gate_serves() -> None:
    gate, upstream, _ = _setup(Script())
    result = await call_asgi(make_app(gate, upstream), "/v1/models", b"", method="GET")
    assert result.status == 200
    assert [m["id"] for m in result.json()["data"]] == ["smollm2"]
    assert result.json()["object"] == "list"


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        (CHAT, b"{not json", 400, "malformed JSON"),
        (CHAT, b"[1, 2]", 400, "JSON object"),
        (CHAT, {"model": 7, "messages": MESSAGES}, 400, "'model'"),
        (CHAT, {"model": "smollm2", "messages": MESSAGES, "stream": "yes"}, 400, "'stream'"),
        (CHAT, {"model": "smollm2", "messages": "hi"}, 400, "'messages'"),
        (CHAT, {"model": "smollm2"}, 400, "'messages'"),
        (CHAT, {"model": "smollm2", "messages": MESSAGES, "stream_options": 1}, 400,
         "'stream_options'"),
        (CHAT, {"model": "smollm2", "messages": MESSAGES, "program_id": "has space"}, 400,
         "program id"),
        (CHAT, {"model": "smollm2", "messages": MESSAGES, "program_id": 5}, 400, "program_id"),
        ("/v1/completions", {"model": "smollm2", "prompt": 5}, 400, "'prompt'"),
        ("/generate", {"sampling_params": {}}, 400, "'text' or 'input_ids'"),
        ("/generate", {"input_ids": "abc"}, 400, "'input_ids'"),
    ],
)
async def test_bad_input_gets_a_json_reason_and_reaches_no_engine(
    path: str, body: bytes | dict[str, Any], status: int, words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{}"]))
    result = await call_asgi(make_app(gate, upstream), path, body)
    assert result.status == status
    assert words in result.json()["error"]["message"]
    assert upstream.requests == []
    assert gate.finished == []
    assert not any(record.exc_info for record in caplog.records)


@pytest.mark.parametrize("declare_length", [True, False])
async def test_body_over_the_limit_is_413(declare_length: bool) -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{}"]))
    app = make_app(gate, upstream, max_body_bytes=1000)
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "x" * 2000}]}
    result = await call_asgi(app, CHAT, body, send_content_length=declare_length)
    assert result.status == 413
    assert "1000 bytes" in result.json()["error"]["message"]
    assert upstream.requests == []
    small = {"model": "smollm2", "messages": MESSAGES}
    assert (await call_asgi(app, CHAT, small, send_content_length=declare_length)).status == 200


async def test_overhead_excludes_time_held_by_the_scheduler() -> None:
    gate, upstream, _ = _setup(Script(chunks=[orjson.dumps(COMPLETION)]))
    gate.hold = asyncio.Event()
    task = asyncio.create_task(call_asgi(make_app(gate, upstream), CHAT,
                                         {"model": "smollm2", "messages": MESSAGES}))
    await asyncio.wait_for(gate.holding.wait(), 5)
    await asyncio.sleep(0.3)  # the program is held for 300 ms: scheduling, not proxy cost
    gate.hold.set()
    assert (await asyncio.wait_for(task, 5)).status == 200
    [(overhead_s, _)] = gate.overheads
    assert 0 <= overhead_s < 0.3


async def test_server_shutdown_mid_request_finishes_it_and_propagates() -> None:
    stall = asyncio.Event()
    gate, upstream, _ = _setup(Script(chunks=[b"{", b"}"], stall=stall))
    task = asyncio.create_task(call_asgi(make_app(gate, upstream), CHAT,
                                         {"model": "smollm2", "messages": MESSAGES},
                                         headers={"X-Thunder-Program-Id": "prog-f"}))
    await asyncio.wait_for(upstream.stalled.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream.closed == [False]
    assert [f.outcome for f in gate.finished] == [RequestOutcome.DISCONNECTED]


async def test_non_integer_content_length_is_400() -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{}"]))
    result = await call_asgi(make_app(gate, upstream), CHAT,
                             {"model": "smollm2", "messages": MESSAGES},
                             send_content_length=False, headers={"Content-Length": "ten"})
    assert result.status == 400
    assert "Content-Length" in result.json()["error"]["message"]


@pytest.mark.parametrize("depth", [255, 1000, 1025, 5000])
async def test_json_nested_too_deep_is_400_at_every_depth(depth: int) -> None:
    gate, upstream, _ = _setup(Script(chunks=[b"{}"]))
    deep = b"[" * depth + b"]" * depth
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": ' + deep + b"}"
    result = await call_asgi(make_app(gate, upstream), CHAT, body)
    assert result.status == 400
    assert "nested deeper than 254 levels" in str(result.json())
    assert upstream.requests == []


class _DeadFirstEngine(FakeUpstream):
    """Backend ``sglang-0`` refuses connections; any other answers from the script."""

    async def send(self, url: str, body: bytes, headers: Any) -> Any:
        if url.startswith(ENGINE_URL):
            self.requests.append(Forwarded(url, orjson.loads(body), dict(headers)))
            raise UpstreamUnreachable("connection refused")
        return await super().send(url, body, headers)


def _with_alternate(upstream: FakeUpstream) -> tuple[RecordingGate, Any]:
    from fastapi import FastAPI

    from thunder_scheduler.backends.sglang import SGLangBackend
    from thunder_scheduler.proxy import ProxyEndpoints, ProxySettings

    gate = RecordingGate(sglang_backend(AbortRecorder()))
    other = SGLangBackend("sglang-1", "http://other.test:30000",
                          httpx.AsyncClient(transport=httpx.MockTransport(AbortRecorder())))
    proxy = ProxyEndpoints(gate, upstream, ProxySettings(), alternates=lambda failed: [other])
    app = FastAPI()
    app.include_router(proxy.router())
    return gate, app


async def test_a_refused_connection_is_retried_once_on_another_backend() -> None:
    upstream = _DeadFirstEngine(Script(chunks=[orjson.dumps(COMPLETION)]))
    gate, app = _with_alternate(upstream)
    result = await call_asgi(app, CHAT, {"model": "smollm2", "messages": MESSAGES})
    assert result.status == 200 and result.json()["id"] == "c1"
    assert [r.url.split("/v1")[0] for r in upstream.requests] == [
        ENGINE_URL, "http://other.test:30000"]
    assert gate.upstream_failures == [("sglang-0", "connection refused")]
    assert [f.outcome for f in gate.finished] == [RequestOutcome.OK]


async def test_a_stream_that_broke_after_bytes_is_never_retried() -> None:
    events = sse(chat_chunk("a"), chat_chunk("b"))
    upstream = FakeUpstream(Script(chunks=events, content_type="text/event-stream",
                                   fail_mid_body=UpstreamUnreachable("reset")))
    gate, app = _with_alternate(upstream)
    result = await call_asgi(app, CHAT, {"model": "smollm2", "messages": MESSAGES,
                                         "stream": True})
    assert result.status == 200 and len(upstream.requests) == 1
    last = orjson.loads(result.chunks[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_failed"
    assert [f.outcome for f in gate.finished] == [RequestOutcome.ERROR]
