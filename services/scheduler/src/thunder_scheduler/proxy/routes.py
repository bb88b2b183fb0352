"""The proxy data plane: OpenAI and SGLang-native endpoints forwarded to the engines.

Per request (``POST /v1/chat/completions``, ``/v1/completions``, ``/generate``):

1. The handler reads the body, counting bytes against ``max_body_bytes`` (``Content-Length``
   first, then while reading: 413), parses it once with orjson (400 on malformed JSON or a
   non-object), type-checks only the fields the proxy reads (``model``, ``stream``,
   ``stream_options``, ``messages`` / ``prompt`` / ``text`` / ``input_ids``: 400 with the
   field's name), finds the program id (``thunder_core.contract.program_id_from``: 400 if
   malformed) and strips our identity fields (``strip_identity``). Nothing else in the body
   is validated: the engine answers for the rest.
2. The rest runs inside :class:`_Exchange`, an ASGI response, so one task can watch the
   client's connection (ASGI ``http.disconnect``) for the whole life of the request:
   waiting in ``gate.acquire`` (the program may be held), waiting for the engine, streaming.
3. ``gate.new_request_id`` gives the engine request id ``<program>:<seq>`` (or the client's
   own ``rid``, when it sent a free one);
   ``backend.decorate`` writes it into the body (SGLang ``rid``, vLLM ``request_id``,
   llama.cpp ``id_slot``) and ``backend.request_headers`` adds headers. OpenAI streaming
   requests get ``stream_options.include_usage = true`` (see ``streaming``).
4. The body is re-serialised once (orjson) and POSTed through the pooled
   :class:`~thunder_scheduler.proxy.upstream.UpstreamClient`. Streams are forwarded chunk by
   chunk as they arrive; a complete response is forwarded byte for byte as the engine sent it.
5. ``gate.finish`` is called exactly once for every request that entered ``acquire``:
   ``OK`` after the response was delivered, ``ERROR`` for an engine error status, an
   unreachable engine (502 naming the backend), a timeout (504) or a failure mid-stream, and
   ``DISCONNECTED`` when the client left (the upstream connection is closed, and SGLang gets
   ``POST /abort_request``). Usage is whatever the engine reported, else None.
6. A connection to the engine that was refused or broke (sending, reading, or mid-stream;
   not a timeout) is also reported with ``gate.report_upstream_failure(backend, reason)``, so
   the backend monitor counts it like a failed poll.

Headers. Hop-by-hop headers (RFC 9110 section 7.6.1: ``Connection`` and the headers it
names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``), ``Host``, ``Content-Length`` (recomputed), ``Authorization`` (the client's key
to us, never the engine's) and every ``X-Thunder-*`` header are not forwarded;
``Accept-Encoding: identity`` is sent so the engine's bytes can be scanned as they pass.

Proxy overhead (reported through ``gate.observe_proxy_overhead``), per request::

    overhead_s = (t_forwarded - t_received) - acquire_s - upstream_s

``t_received``: the handler starts (headers parsed by the server); ``t_forwarded``: the first
body bytes were handed to the server for the client (streaming), or the whole response
(non-streaming); ``acquire_s``: time inside ``gate.acquire`` (scheduling, incl. holds, is
not proxy cost); ``upstream_s``: from sending the upstream request until the engine's bytes
that were forwarded at ``t_forwarded`` had arrived. It is reported for delivered responses
(``OK``) only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from thunder_core.contract import (
    CLIENT_RID_FIELD,
    REQUEST_ID_HEADER,
    THUNDER_HEADER_PREFIX,
    EnginePaths,
    InvalidProgramId,
    error_body,
    program_id_from,
    strip_identity,
)
from thunder_scheduler.backends.base import Backend
from thunder_scheduler.gate import GateError, Placement, RequestGate, Usage
from thunder_scheduler.json_limits import depth_error
from thunder_scheduler.next_prompt import (
    extended_prefix_body,
    streamed_tool_call_message,
    tool_call_message,
)
from thunder_scheduler.proxy.settings import ProxySettings
from thunder_scheduler.proxy.streaming import SseScanner
from thunder_scheduler.proxy.upstream import (
    UpstreamClient,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from thunder_scheduler.proxy.usage import response_usage
from thunder_scheduler.quota import ProgramQuota, client_identity
from thunder_scheduling.events import RequestOutcome

__all__ = [
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "GENERATE_PATH",
    "MODELS_PATH",
    "PROXY_PREFIXES",
    "ProxyEndpoints",
    "create_proxy_router",
]

log = logging.getLogger(__name__)

CHAT_PATH: Final = EnginePaths.CHAT_COMPLETIONS
COMPLETIONS_PATH: Final = EnginePaths.COMPLETIONS
GENERATE_PATH: Final = EnginePaths.GENERATE
MODELS_PATH: Final = EnginePaths.MODELS
PROXY_PREFIXES: Final = (CHAT_PATH, COMPLETIONS_PATH, GENERATE_PATH, MODELS_PATH)
"""Paths guarded by the client key (checked before the body is read)."""

_NOT_FORWARDED: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
        "authorization",
        "expect",
    }
)
_OUR_PREFIX: Final = THUNDER_HEADER_PREFIX
_JSON: Final = "application/json"
_SSE: Final = "text/event-stream"


class _ClientError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body(status, reason)), status, headers, media_type=_JSON)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    path: str
    native: bool
    """SGLang ``/generate``: usage in ``meta_info``, no ``stream_options``, no model."""
    prompt_fields: tuple[str, ...]
    """At least one must be present."""


_CHAT: Final = _Endpoint(CHAT_PATH, False, ("messages",))
_COMPLETIONS: Final = _Endpoint(COMPLETIONS_PATH, False, ("prompt",))
_GENERATE: Final = _Endpoint(GENERATE_PATH, True, ("text", "input_ids"))
_HOT_PATHS: Final = {e.path: e for e in (_CHAT, _COMPLETIONS, _GENERATE)}


def _check_fields(endpoint: _Endpoint, body: dict[str, Any]) -> tuple[str | None, bool]:
    """Type-check the fields the proxy reads; return (model, stream). Raises ``_ClientError``."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _ClientError(400, "field 'model' must be a string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _ClientError(400, "field 'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _ClientError(400, "field 'stream_options' must be an object")
    present = [name for name in endpoint.prompt_fields if body.get(name) is not None]
    if not present:
        names = " or ".join(repr(name) for name in endpoint.prompt_fields)
        raise _ClientError(400, f"field {names} is required")
    for name in present:
        value = body[name]
        if name == "messages":
            if not isinstance(value, list) or not value:
                raise _ClientError(400, "field 'messages' must be a non-empty array")
        elif name in ("prompt", "text"):
            if not isinstance(value, (str, list)):
                raise _ClientError(400, f"field {name!r} must be a string or an array")
        elif not isinstance(value, list):  # input_ids
            raise _ClientError(400, "field 'input_ids' must be an array")
    return (None if endpoint.native else model), stream


async def _read_body(receive: Receive, declared: str | None, max_bytes: int) -> bytes:
    """The request body, refused (413) above ``max_bytes``: by Content-Length, then by count."""
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise _ClientError(400, "header 'Content-Length' is not an integer") from None
        if declared_bytes > max_bytes:
            raise _ClientError(413, f"request body of {declared_bytes} bytes exceeds the "
                                    f"limit of {max_bytes} bytes")
    # straight from ASGI receive (Request.stream() adds an async generator per request).
    parts: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientError(400, "client disconnected while sending the body")
        chunk: bytes = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > max_bytes:
                raise _ClientError(413, f"request body exceeds the limit of {max_bytes} bytes")
            parts.append(chunk)
        if not message.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Headers(dict[str, str]):
    """The request's headers, names lower-cased, looked up case-insensitively.

    Built once per request from the raw ASGI list and used both to find the program id
    (``program_id_from`` treats a mapping with ``getlist`` as case-insensitive) and to build
    the forwarded headers.
    """

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def getlist(self, key: str) -> list[str]:
        value = dict.get(self, key.lower())
        return [] if value is None else [value]


def _request_headers(scope: Scope) -> _Headers:
    headers = _Headers()
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        if name in headers:  # repeated header: comma-join (RFC 9110 section 5.3)
            headers[name] = f"{headers[name]}, {value.decode('latin-1')}"
        else:
            headers[name] = value.decode("latin-1")
    return headers


def _forward_headers(headers: _Headers) -> dict[str, str]:
    named: frozenset[str] = frozenset()
    connection = dict.get(headers, "connection")
    if connection is not None:
        named = frozenset(token.strip().lower() for token in connection.split(","))
    forwarded = {
        name: value
        for name, value in headers.items()
        if name not in _NOT_FORWARDED and name not in named and not name.startswith(_OUR_PREFIX)
    }
    forwarded["content-type"] = _JSON
    forwarded["accept-encoding"] = "identity"
    return forwarded


class ProxyEndpoints:
    """The proxy's endpoints; holds the injected gate, upstream client and settings.

    Two ways in, same handlers: :meth:`router` (FastAPI routes, for every method and the
    OpenAPI schema) and :meth:`serve` (pure ASGI, for the hot ``POST`` paths, used by
    ``proxy.fast_path`` in front of the app's middleware and route matching).
    """

    def __init__(self, gate: RequestGate, upstream: UpstreamClient, settings: ProxySettings,
                 quota: ProgramQuota | None = None,
                 alternates: Callable[[str], Iterable[Backend]] | None = None,
                 model_backends: Callable[[str], Sequence[Backend]] | None = None,
                 refused_first: Callable[[str, str], None] | None = None):
        self.gate = gate
        self.upstream = upstream
        self.settings = settings
        self.quota = quota
        self.alternates = alternates
        """Healthy backends other than the named one (a request whose engine refused or
        dropped the connection before answering is retried once on the first of them)."""
        self.model_backends = model_backends
        """Healthy backends whose engines list the named model (``/v1/models``)."""
        self.refused_first = refused_first
        """Called with (program id, reason) when the request that started a program was
        refused by the engine (4xx): the program ends instead of holding a place for its
        whole lease."""

    def router(self) -> APIRouter:
        router = APIRouter(tags=["proxy"])
        router.add_api_route(CHAT_PATH, self.chat_completions, methods=["POST"])
        router.add_api_route(COMPLETIONS_PATH, self.completions, methods=["POST"])
        router.add_api_route(GENERATE_PATH, self.generate, methods=["POST"])
        router.add_api_route(MODELS_PATH, self.list_models, methods=["GET"])
        return router

    @staticmethod
    def hot_endpoint(scope: Scope) -> _Endpoint | None:
        """The endpoint of a ``POST`` to one of the forwarded paths, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        return _HOT_PATHS.get(scope["path"])

    async def serve(self, scope: Scope, receive: Receive, send: Send, endpoint: _Endpoint) -> None:
        """Serve one request to ``endpoint`` as a pure ASGI app (no FastAPI around it)."""
        try:
            response = await self._handle(scope, receive, endpoint)
        except Exception:  # a bug: answer like the service's 500 handler, never a bare drop
            log.exception("%s %s failed", scope["method"], endpoint.path)
            response = _error_response(500, "internal proxy error")
        await response(scope, receive, send)

    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request.scope, request.receive, _CHAT)

    async def completions(self, request: Request) -> Response:
        return await self._handle(request.scope, request.receive, _COMPLETIONS)

    async def generate(self, request: Request) -> Response:
        return await self._handle(request.scope, request.receive, _GENERATE)

    async def list_models(self) -> Response:
        return Response(
            orjson.dumps({"object": "list", "data": self.gate.models()}), media_type=_JSON
        )

    async def _handle(self, scope: Scope, receive: Receive, endpoint: _Endpoint) -> Response:
        received_at = time.perf_counter()
        try:
            headers = _request_headers(scope)
            raw = await _read_body(
                receive, dict.get(headers, "content-length"), self.settings.max_body_bytes
            )
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if str(exc).startswith("depth limit"):
                    raise _ClientError(400, depth_error()) from None
                raise _ClientError(400, f"malformed JSON body: {exc}") from None
            if not isinstance(body, dict):
                raise _ClientError(400, "request body must be a JSON object")
            model, stream = _check_fields(endpoint, body)
            try:
                program_id = program_id_from(headers, body)
            except InvalidProgramId as exc:
                raise _ClientError(400, str(exc)) from None
            new_program = False
            if program_id is not None and self.quota is not None:
                new_program = self.quota.is_new(program_id)
                refusal = self.quota.admit(
                    program_id, client_identity(scope["headers"], scope.get("client")))
                if refusal is not None:
                    raise _ClientError(429, refusal)
        except _ClientError as exc:
            log.info("%s %s: %d %s", scope["method"], endpoint.path, exc.status, exc.reason)
            return _error_response(exc.status, exc.reason)
        strip_identity(body)
        exchange = _Exchange(
            self, endpoint, body, model, stream, program_id, _forward_headers(headers),
            received_at,
        )
        exchange.new_program = new_program
        return exchange


class _Exchange(Response):
    """One proxied request, run as an ASGI response so it can watch for the client leaving."""

    def __init__(
        self,
        proxy: ProxyEndpoints,
        endpoint: _Endpoint,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        program_id: str | None,
        headers: dict[str, str],
        received_at: float,
    ) -> None:
        # Response's own fields are unused: __call__ writes the response itself.
        self.background = None
        self.status_code = 200
        self.raw_headers = []
        self._proxy = proxy
        self._endpoint = endpoint
        self._body = body
        self._model = model
        self._stream = stream
        self._program_id = program_id
        self._fwd_headers = headers
        self._received_at = received_at
        self._request_id = ""
        self._entered_acquire = False
        self._placement: Placement | None = None
        self._outcome = RequestOutcome.ERROR
        self._usage: Usage | None = None
        self._tool_call = False
        self._next_prefix: dict[str, Any] | None = None  # prompt split: see next_prompt
        self._prompt_body: dict[str, Any] = body
        self._upstream_open = False          # an upstream request is in flight
        self._response_started = False       # the status line went to the client
        self._response_complete = False      # the last byte went to the client
        self._disconnected = False
        self._cleanup_on_cancel = False      # re-raise CancelledError after cleaning up
        self._acquire_s = 0.0
        self._overhead_s: float | None = None
        self.new_program = False             # this request starts its program
        self._engine_status = 0              # the engine's status, when it answered one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request runs in this task; a watcher task cancels it if the client leaves.
        # (One extra task per request instead of two: this path is hot.)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.get_running_loop().create_task(self._watch(receive, task))
        failure: Exception | None = None
        try:
            await self._run(send)
        except asyncio.CancelledError:
            if not self._disconnected:
                # the server is shutting down: same as a client leaving, then re-raise.
                self._disconnected = True
                self._cleanup_on_cancel = True
            else:
                task.uncancel()  # our own cancellation, delivered: swallow it
            if task.cancelling():
                self._cleanup_on_cancel = True
        except Exception as exc:
            failure = exc
        finally:
            watcher.cancel()
        if failure is not None and not self._response_started and not self._disconnected:
            await self._send_error(send, 500, "internal proxy error")
        self._conclude(failure)
        if self._disconnected and self._upstream_open:
            await self._abort_upstream()
        if self._cleanup_on_cancel:
            raise asyncio.CancelledError

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                if not self._response_complete:
                    self._disconnected = True
                    task.cancel()
                return

    def _conclude(self, failure: Exception | None) -> None:
        """Finish the request with the gate: exactly once, whatever happened."""
        if failure is not None:
            log.error("proxy failure for request %s", self._request_id, exc_info=failure)
        if self._disconnected:
            self._outcome = RequestOutcome.DISCONNECTED
        if not self._entered_acquire:
            return
        gate = self._proxy.gate
        try:
            if self._next_prefix is None:
                gate.finish(
                    self._placement, self._program_id, self._request_id, self._outcome,
                    self._usage, self._tool_call,
                )
            else:
                gate.finish(
                    self._placement, self._program_id, self._request_id, self._outcome,
                    self._usage, self._tool_call, next_prefix=self._next_prefix,
                )
        except Exception:
            log.exception("gate.finish failed for request %s", self._request_id)
        refused_first = self._proxy.refused_first
        if (self.new_program and refused_first is not None and self._program_id is not None
                and 400 <= self._engine_status < 500):
            try:
                refused_first(self._program_id,
                              f"its first request was refused by the engine "
                              f"({self._engine_status})")
            except Exception:
                log.exception("ending program %s failed", self._program_id)
        if self._overhead_s is not None and self._outcome is RequestOutcome.OK:
            gate.observe_proxy_overhead(self._overhead_s, self._stream)

    async def _abort_upstream(self) -> None:
        placement = self._placement
        if placement is None or not placement.backend.capabilities.abort_by_request_id:
            return  # closing the connection (done by the worker) is the abort
        try:
            async with asyncio.timeout(self._proxy.settings.abort_timeout_s):
                await placement.backend.abort(self._request_id)
        except Exception as exc:  # an abort that fails must not fail the request's cleanup
            log.warning("abort of %s on %s failed: %s", self._request_id,
                        placement.backend.name, exc)

    # -- the request itself ------------------------------------------------------------------

    async def _run(self, send: Send) -> None:
        proxy, endpoint = self._proxy, self._endpoint
        gate = proxy.gate
        client_rid = self._body.get(CLIENT_RID_FIELD)
        self._request_id = gate.new_request_id(
            self._program_id, client_rid if isinstance(client_rid, str) else None)
        started = time.perf_counter()
        self._entered_acquire = True
        try:
            placement = await gate.acquire(
                self._program_id, self._request_id, self._body, self._model
            )
        except GateError as exc:
            self._entered_acquire = False  # refused: nothing to finish
            log.info("%s refused: %d %s", endpoint.path, exc.status, exc.reason)
            await self._send_error(send, exc.status, exc.reason)
            return
        self._acquire_s = time.perf_counter() - started
        if self._model is not None and proxy.model_backends is not None:
            placement = self._serving_model(placement, proxy.model_backends(self._model))
        self._placement = placement

        body = self._body
        wants_usage = True
        if self._stream and not endpoint.native:
            options = body.get("stream_options") or {}
            wants_usage = options.get("include_usage") is True
            if not wants_usage:
                body["stream_options"] = {**options, "include_usage": True}
        plain = dict(body) if proxy.alternates is not None else body  # before decorate
        if self._splits():
            self._prompt_body = dict(body)  # undecorated: the split's prefix starts from it

        retried = False
        while True:
            backend = placement.backend
            body = backend.decorate(endpoint.path, plain if retried else body, placement.hints)
            headers = self._fwd_headers
            extra = backend.request_headers(placement.hints)
            if extra:
                headers = {**headers, **extra}
            url = backend.base_url + endpoint.path

            self._upstream_open = True
            upstream_sent_at = time.perf_counter()
            try:
                payload = orjson.dumps(body)
            except TypeError:  # orjson writes 254 levels, reads 1,024 (json_limits.py)
                self._upstream_open = False
                await self._send_error(send, 400, depth_error())
                return
            try:
                response = await proxy.upstream.send(url, payload, headers)
                break
            except UpstreamTimeout as exc:
                self._upstream_open = False
                await self._send_error(send, 504, f"backend {backend.name!r} timed out: {exc}")
                return
            except UpstreamUnreachable as exc:
                self._upstream_open = False
                self._report_unreachable(exc)
                # nothing reached the client yet: once, on another healthy backend
                alternate = None if retried else self._alternate(backend.name)
                if alternate is None:
                    await self._send_error(
                        send, 502, f"backend {backend.name!r} unreachable: {exc}")
                    return
                log.warning("backend %r unreachable (%s): request %s retried on %r",
                            backend.name, exc, self._request_id, alternate.name)
                retried = True
                placement = Placement(alternate, replace(
                    placement.hints, session_id=None, slot_id=None))
                self._placement = placement
        try:
            if response.status >= 400:
                await self._pass_error(send, response)
            elif self._stream:
                await self._relay_stream(send, response, upstream_sent_at, not wants_usage)
            else:
                await self._relay_whole(send, response, upstream_sent_at)
        finally:
            await response.aclose()
            if not self._disconnected:
                self._upstream_open = False

    async def _pass_error(self, send: Send, response: UpstreamResponse) -> None:
        """Engine error: forward status and body as they are."""
        backend = self._placement.backend.name if self._placement else "?"
        try:
            payload = await response.read()
        except (UpstreamTimeout, UpstreamUnreachable) as exc:
            self._report_unreachable(exc)
            await self._send_error(send, 502, f"backend {backend!r} failed: {exc}")
            return
        log.info("backend %r answered %d to %s", backend, response.status, self._request_id)
        self._engine_status = response.status
        await self._send_complete(send, response.status, response.content_type or _JSON, payload)

    async def _relay_whole(
        self, send: Send, response: UpstreamResponse, upstream_sent_at: float
    ) -> None:
        backend = self._placement.backend.name if self._placement else "?"
        try:
            payload = await response.read()
        except UpstreamTimeout as exc:
            await self._send_error(send, 504, f"backend {backend!r} timed out: {exc}")
            return
        except UpstreamUnreachable as exc:
            self._report_unreachable(exc)
            await self._send_error(send, 502, f"backend {backend!r} failed: {exc}")
            return
        upstream_s = time.perf_counter() - upstream_sent_at
        await self._send_complete(send, response.status, response.content_type or _JSON, payload)
        self._overhead_s = self._elapsed_s() - upstream_s
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        self._usage, self._tool_call = response_usage(self._endpoint.native, parsed)
        if self._tool_call and self._splits():
            message = tool_call_message(parsed)
            if message is not None:
                self._next_prefix = extended_prefix_body(self._prompt_body, message)
        self._outcome = RequestOutcome.OK

    async def _relay_stream(
        self, send: Send, response: UpstreamResponse, upstream_sent_at: float, drop_usage: bool
    ) -> None:
        scanner = SseScanner(native=self._endpoint.native, drop_usage_chunk=drop_usage,
                             capture=self._splits())
        self._response_started = True
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", (response.content_type or _SSE).encode("latin-1")),
                    (b"cache-control", b"no-cache"),
                    (REQUEST_ID_HEADER.lower().encode(), self._request_id.encode("latin-1")),
                ],
            }
        )
        failure: str | None = None
        try:
            async for chunk in response.chunks():
                out = scanner.feed(chunk)
                if out:
                    if self._overhead_s is None:
                        upstream_s = time.perf_counter() - upstream_sent_at
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                        self._overhead_s = self._elapsed_s() - upstream_s
                    else:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
        except (UpstreamTimeout, UpstreamUnreachable) as exc:
            backend = self._placement.backend.name if self._placement else "?"
            failure = f"backend {backend!r} failed mid-stream: {exc}"
            log.warning("%s (request %s)", failure, self._request_id)
            self._report_unreachable(exc)
        finally:
            self._usage = scanner.usage
            self._tool_call = scanner.ends_with_tool_call
        tail = scanner.close()
        if failure is not None:
            # the status line is gone: tell the client in the stream, as OpenAI-style servers do.
            tail += b"data: " + orjson.dumps(
                error_body(502, failure, code="upstream_failed")) + b"\n\n"
        self._response_complete = True
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        self._usage = scanner.usage
        self._tool_call = scanner.ends_with_tool_call
        if failure is None:
            self._outcome = RequestOutcome.OK
            if self._tool_call and scanner.captured is not None:
                message = streamed_tool_call_message(scanner.captured)
                if message is not None:
                    self._next_prefix = extended_prefix_body(self._prompt_body, message)

    def _splits(self) -> bool:
        """Whether a tool-call response's next prefix is wanted (a program's chat request and
        a gate that does the prompt split)."""
        return (self._program_id is not None and self._endpoint is _CHAT
                and bool(getattr(self._proxy.gate, "prompt_split", False)))

    @staticmethod
    def _serving_model(placement: Placement, serving: Sequence[Backend]) -> Placement:
        """Route by model only where backends serve different models: a request placed on a
        backend whose engine does not list its model goes to one that does. Where none lists
        it, or the placed one does, the placement stands and the engine judges the name."""
        if not serving or any(b.name == placement.backend.name for b in serving):
            return placement
        return Placement(serving[0], replace(placement.hints, session_id=None, slot_id=None))

    def _alternate(self, failed: str) -> Backend | None:
        """Another healthy backend to retry a request whose engine could not be reached."""
        alternates = self._proxy.alternates
        if alternates is None:
            return None
        for backend in alternates(failed):
            return backend
        return None

    def _report_unreachable(self, exc: Exception) -> None:
        """A broken or refused connection counts against the backend's health (the monitor may
        mark it unhealthy before its next poll); a timeout does not (a slow engine is alive)."""
        if not isinstance(exc, UpstreamUnreachable) or self._placement is None:
            return
        try:
            self._proxy.gate.report_upstream_failure(self._placement.backend.name, str(exc))
        except Exception:  # reporting must never fail the request's own error answer
            log.exception("report_upstream_failure failed for request %s", self._request_id)

    def _elapsed_s(self) -> float:
        return time.perf_counter() - self._received_at - self._acquire_s

    async def _send_complete(self, send: Send, status: int, content_type: str, body: bytes) -> None:
        self._response_started = True
        self._response_complete = True
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(body)).encode()),
                    (REQUEST_ID_HEADER.lower().encode(), self._request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_error(self, send: Send, status: int, reason: str) -> None:
        if status >= 500:
            log.warning("request %s: %d %s", self._request_id, status, reason)
        await self._send_complete(send, status, _JSON, orjson.dumps(error_body(status, reason)))


def create_proxy_router(
    gate: RequestGate, upstream: UpstreamClient, settings: ProxySettings
) -> APIRouter:
    """The data-plane routes, bound to an injected gate and upstream client."""
    return ProxyEndpoints(gate, upstream, settings).router()
