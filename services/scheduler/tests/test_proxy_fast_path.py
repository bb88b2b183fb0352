"""The hot proxy paths served ahead of FastAPI (``FastPathApp``) behave exactly like the routes.

Each request is sent once through the router in a plain FastAPI app and once through the
fast path, against the same scripted fake engine; status, body, the headers a client sees and
what the gate is told must be the same. Requests the fast path does not own (other methods,
``/v1/models``, unknown paths) still get FastAPI's answers. The service's client key is
checked on the fast path with the same 401 bodies and ``WWW-Authenticate`` headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from thunder_scheduling.events import RequestOutcome
from thunder_testkit.proxy import (
    AbortRecorder,
    FakeUpstream,
    RecordingGate,
    Script,
    call_asgi,
    chat_chunk,
    make_app,
    make_fast_path_app,
    sglang_backend,
    sse,
    usage_chunk,
)
from thunder_testkit.service import engineless_app, in_process_client

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
COMPLETION = (
    b'{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
)
AppFactory = Callable[..., FastAPI]

CASES: list[tuple[str, Script, str, bytes | dict[str, Any], dict[str, str]]] = [
    ("complete", Script(chunks=[COMPLETION]), CHAT,
     {"model": "smollm2", "messages": MESSAGES}, {"X-Thunder-Program-Id": "p"}),
    ("stream", Script(chunks=sse(chat_chunk("a"), usage_chunk(5, 1, None), "[DONE]"),
                      content_type="text/event-stream"), CHAT,
     {"model": "smollm2", "messages": MESSAGES, "stream": True}, {}),
    ("generate", Script(chunks=[b'{"text":"x","meta_info":{"prompt_tokens":3,'
                                b'"completion_tokens":1}}']), "/generate",
     {"text": "hello"}, {"X-Thunder-Program-Id": "g"}),
    ("engine error", Script(status=400, chunks=[b'{"error":"bad"}']), "/v1/completions",
     {"model": "smollm2", "prompt": "x"}, {}),
    ("malformed json", Script(), CHAT, b"{nope", {}),
    ("missing messages", Script(), CHAT, {"model": "smollm2"}, {}),
    ("unknown model", Script(), CHAT, {"model": "other", "messages": MESSAGES}, {}),
    ("bad program id", Script(), CHAT, {"model": "smollm2", "messages": MESSAGES},
     {"X-Thunder-Program-Id": "a b"}),
    ("too large", Script(), CHAT, {"model": "smollm2", "messages": [{"c": "x" * 300}]}, {}),
]


async def _through(factory: AppFactory, script: Script, path: str,
                   body: bytes | dict[str, Any], headers: dict[str, str]) -> tuple[Any, ...]:
    gate = RecordingGate(sglang_backend(AbortRecorder()))
    upstream = FakeUpstream(script)
    result = await call_asgi(factory(gate, upstream, max_body_bytes=256), path, body,
                             headers=headers)
    seen = {k: v for k, v in result.headers.items() if k != "content-length"}
    finished = [(f.program_id, f.request_id, f.outcome, f.usage) for f in gate.finished]
    return result.status, result.body, seen, finished, [r.body for r in upstream.requests]


@pytest.mark.parametrize(("name", "script", "path", "body", "headers"), CASES,
                         ids=[case[0] for case in CASES])
async def test_fast_path_answers_exactly_like_the_router(
    name: str, script: Script, path: str, body: bytes | dict[str, Any], headers: dict[str, str]
) -> None:
    routed = await _through(make_app, script, path, body, headers)
    fast = await _through(make_fast_path_app, script, path, body, headers)
    assert fast == routed
    assert fast[0] == {"complete": 200, "stream": 200, "generate": 200, "engine error": 400,
                       "malformed json": 400, "missing messages": 400, "unknown model": 200,
                       "bad program id": 400, "too large": 413}[name]


async def test_other_methods_and_paths_still_go_through_fastapi() -> None:
    gate = RecordingGate(sglang_backend(AbortRecorder()))
    app = make_fast_path_app(gate, FakeUpstream())
    wrong_method = await call_asgi(app, CHAT, b"", method="GET")
    assert wrong_method.status == 405
    models = await call_asgi(app, "/v1/models", b"", method="GET")
    assert models.status == 200 and models.json()["data"][0]["id"] == "smollm2"
    missing = await call_asgi(app, "/v1/chat/completions/", b"{}")
    assert missing.status in (307, 404)  # FastAPI's trailing-slash redirect or not found
    assert gate.acquired == []


async def test_client_leaving_while_held_on_the_fast_path_is_finished_disconnected() -> None:
    gate = RecordingGate(sglang_backend(AbortRecorder()))
    gate.hold = asyncio.Event()
    upstream = FakeUpstream(Script(chunks=[COMPLETION]))
    leave = asyncio.Event()
    task = asyncio.create_task(call_asgi(
        make_fast_path_app(gate, upstream), CHAT, {"model": "smollm2", "messages": MESSAGES},
        headers={"X-Thunder-Program-Id": "held"}, leave=leave,
    ))
    await asyncio.wait_for(gate.holding.wait(), 5)
    leave.set()
    await asyncio.wait_for(task, 5)
    assert upstream.requests == []
    [fin] = gate.finished
    assert fin.placement is None and fin.outcome is RequestOutcome.DISCONNECTED


async def test_service_client_key_is_checked_on_the_fast_path() -> None:
    app = engineless_app(api_key="client-secret", admin_key="admin-secret")
    body = {"model": "m", "messages": MESSAGES}
    async with in_process_client(app) as http:
        missing = await http.post(CHAT, json=body)
        assert missing.status_code == 401
        assert "missing api key" in missing.json()["error"]["message"]
        assert missing.headers["www-authenticate"] == 'Bearer realm="thunder"'
        wrong = await http.post(CHAT, json=body, headers={"Authorization": "Bearer admin-secret"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid api key"
        assert wrong.headers["www-authenticate"] == (
            'Bearer realm="thunder", error="invalid_token"'
        )
        # the right key gets past the check to the gate: no backend configured is 503
        ok = await http.post(CHAT, json=body, headers={"Authorization": "Bearer client-secret"})
        assert ok.status_code == 503 and "no healthy backend" in ok.json()["error"]["message"]
