"""Fakes and an in-process ASGI driver for the proxy router's unit tests (socket-free).

* ``FakeUpstream``: a scripted ``UpstreamClient``: records every forwarded request and
  answers with a scripted status and chunks, or fails (unreachable / timeout), for fault
  injection. It records whether a response was closed before its end (an abort).
* ``RecordingGate``: a ``RequestGate`` with one backend that records ``finish`` calls and
  upstream failure reports, and can hold ``acquire`` until released, or refuse with a
  ``GateError``.
* ``call_asgi``: drives the app like uvicorn does, including a client that leaves
  (``http.disconnect``) at a chosen moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from thunder_scheduler.backends.base import Backend, RequestHints
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.gate import Placement, Usage
from thunder_scheduler.proxy import (
    FastPathApp,
    ProxyEndpoints,
    ProxySettings,
    create_proxy_router,
)
from thunder_scheduler.proxy.upstream import UpstreamTimeout, UpstreamUnreachable
from thunder_scheduling.events import RequestOutcome

ENGINE_URL = "http://engine.test:30000"


@dataclass
class Forwarded:
    url: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Script:
    """What the fake engine answers: status, body pieces, an optional gate before each."""

    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    content_type: str = "application/json"
    fail_on_send: Exception | None = None
    fail_mid_body: Exception | None = None
    stall: asyncio.Event | None = None
    """When set, the body blocks after the first chunk until the event is set."""


class _FakeResponse:
    def __init__(self, script: Script, upstream: FakeUpstream) -> None:
        self._script = script
        self._upstream = upstream
        self._eof = False

    @property
    def status(self) -> int:
        return self._script.status

    @property
    def content_type(self) -> str | None:
        return self._script.content_type

    async def chunks(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self._script.chunks):
            if index == 1 and self._script.stall is not None:
                self._upstream.stalled.set()
                await self._script.stall.wait()
            if index == 1 and self._script.fail_mid_body is not None:
                raise self._script.fail_mid_body
            await asyncio.sleep(0)
            yield chunk
        self._eof = True

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        self._upstream.closed.append(self._eof)


class FakeUpstream:
    """Scripted stand-in for an engine behind an ``UpstreamClient`` (a fake, for faults)."""

    name = "fake"

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[Forwarded] = []
        self.closed: list[bool] = []
        self.sent = asyncio.Event()
        """Set once a request was forwarded."""
        self.stalled = asyncio.Event()
        """Set when a response body waits on ``Script.stall``."""
        """One entry per closed response: True when it had been read to the end."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> _FakeResponse:
        self.requests.append(Forwarded(url, orjson.loads(body), dict(headers)))
        self.sent.set()
        if self.script.fail_on_send is not None:
            raise self.script.fail_on_send
        await asyncio.sleep(0)
        return _FakeResponse(self.script, self)

    async def aclose(self) -> None:
        return None


@dataclass
class Finished:
    placement: Placement | None
    program_id: str | None
    request_id: str
    outcome: RequestOutcome
    usage: Usage | None
    ends_with_tool_call: bool


class RecordingGate:
    """A ``RequestGate`` over one backend that records what the proxy tells it (a fake)."""

    def __init__(self, backend: Backend, models: tuple[str, ...] = ("smollm2",)) -> None:
        self.backend = backend
        self.known_models = models
        self.finished: list[Finished] = []
        self.overheads: list[tuple[float, bool]] = []
        self.upstream_failures: list[tuple[str, str]] = []
        self.acquired: list[tuple[str | None, str, dict[str, Any]]] = []
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self._seq = 0

    def new_request_id(self, program_id: str | None, client_id: str | None = None) -> str:
        self._seq += 1
        if client_id:
            return client_id
        return f"{program_id}:{self._seq}" if program_id else f"thunder-{self._seq}"

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0

    async def acquire(
        self, program_id: str | None, request_id: str, body: Mapping[str, Any], model: str | None
    ) -> Placement:
        self.acquired.append((program_id, request_id, dict(body)))
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        return Placement(self.backend, RequestHints(program_id=program_id, request_id=request_id))

    def finish(
        self,
        placement: Placement | None,
        program_id: str | None,
        request_id: str,
        outcome: RequestOutcome,
        usage: Usage | None,
        ends_with_tool_call: bool,
        *,
        next_prefix: Mapping[str, Any] | None = None,
    ) -> None:
        self.finished.append(
            Finished(placement, program_id, request_id, outcome, usage, ends_with_tool_call)
        )

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        self.overheads.append((seconds, streaming))

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        self.upstream_failures.append((backend, reason))

    def models(self) -> list[dict[str, Any]]:
        return [{"id": m, "object": "model", "owned_by": "thunder"} for m in self.known_models]


class AbortRecorder:
    """An httpx ``MockTransport`` handler standing in for SGLang's control endpoints."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/abort_request":
            self.aborted.append(orjson.loads(request.content)["rid"])
            return httpx.Response(200, json={})
        return httpx.Response(404)


def sglang_backend(recorder: AbortRecorder) -> SGLangBackend:
    """The real SGLang backend class, its control calls answered by ``recorder``."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    return SGLangBackend("sglang-0", ENGINE_URL, client)


def make_app(gate: RecordingGate, upstream: FakeUpstream, **settings: Any) -> FastAPI:
    """The router alone in a plain FastAPI app (every request through FastAPI's routing)."""
    app = FastAPI()
    app.include_router(create_proxy_router(gate, upstream, ProxySettings(**settings)))
    return app


def make_fast_path_app(gate: RecordingGate, upstream: FakeUpstream, **settings: Any) -> FastAPI:
    """The router in a ``FastPathApp``, hot POSTs served ahead of FastAPI (as the service)."""
    proxy = ProxyEndpoints(gate, upstream, ProxySettings(**settings))
    app = FastPathApp()
    app.include_router(proxy.router())
    app.serve_proxy_first(proxy)
    return app


@dataclass
class AsgiResult:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call_asgi(
    app: FastAPI,
    path: str,
    body: bytes | dict[str, Any],
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    leave_when: Callable[[AsgiResult], bool] | None = None,
    leave: asyncio.Event | None = None,
    send_content_length: bool = True,
) -> AsgiResult:
    """One request through ``app`` like uvicorn would make it.

    The client leaves (``http.disconnect``) when ``leave`` is set or as soon as
    ``leave_when(result_so_far)`` is true after a message was sent to it.
    """
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = {"content-type": "application/json"}
    if send_content_length:
        hdrs["content-length"] = str(len(raw))
    hdrs.update(headers or {})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    result = AsgiResult(0, {}, [])
    left = leave or asyncio.Event()
    complete = asyncio.Event()
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        waiters = [asyncio.ensure_future(left.wait()), asyncio.ensure_future(complete.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if left.is_set():
            return  # like uvicorn: writes after a disconnect are dropped
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            result.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                complete.set()
        if leave_when is not None and leave_when(result):
            left.set()

    await app(scope, receive, send)
    return result


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    """One ``data:`` event per item (a dict is JSON-encoded), as engines write them."""
    out = []
    for event in events:
        data = event.encode() if isinstance(event, str) else orjson.dumps(event)
        out.append(b"data: " + data + b"\n\n")
    return out


def chat_chunk(
    content: str | None = None, finish: str | None = None, **delta: Any
) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


__all__ = [
    "ENGINE_URL",
    "AbortRecorder",
    "AsgiResult",
    "FakeUpstream",
    "RecordingGate",
    "Script",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "call_asgi",
    "chat_chunk",
    "make_app",
    "sglang_backend",
    "sse",
    "usage_chunk",
]
