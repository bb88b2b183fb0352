"""``UpstreamClient`` on a bare asyncio ``Protocol`` with the ``httptools`` response parser.

Why a third client: on the proxy benchmark (``bench/results/proxy``) the general-purpose
clients spent most of the proxy's CPU per request (aiohttp builds a ``ClientRequest``,
timers, trace hooks and multidicts for every call; httpx far more). Forwarding a POST to an
engine needs much less: one pooled keep-alive connection per request in flight, the request
head and body written in one ``transport.write``, and the response parsed by ``httptools``
(the C parser uvicorn uses, already a dependency through ``uvicorn[standard]``), which also
decodes chunked transfer encoding.

Behaviour (the same contract as the other clients, checked by the same conformance suite):

* connections are kept per ``(host, port)`` and reused when a response was read to its end
  and the engine allowed keep-alive; at most ``upstream_max_connections`` idle ones are kept,
  and one idle for more than ``_IDLE_REUSE_S`` is closed rather than reused;
* ``upstream_connect_timeout_s`` bounds connecting, ``upstream_read_timeout_s`` bounds every
  wait for the engine's next bytes (``UpstreamTimeout``); a refused / reset / prematurely
  closed connection or an unparsable answer is ``UpstreamUnreachable``;
* closing a response before its end closes the connection (how engines learn a client left);
* reading is paused while more than ``_HIGH_WATER_BYTES`` of body wait to be consumed, so a
  slow client cannot make the proxy buffer an engine's whole answer.

Plain ``http://`` only: engines sit on a trusted network next to the scheduler.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from thunder_scheduler.proxy.settings import ProxySettings
from thunder_scheduler.proxy.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable

__all__ = ["RawUpstream"]

_IDLE_REUSE_S: Final = 4.0
"""A pooled connection idle longer than this is closed instead of reused. SGLang and vLLM serve
through uvicorn, whose ``timeout_keep_alive`` default of 5 s closes idle connections; reusing
one just as the engine closes it would fail a POST that cannot be safely retried."""

_HIGH_WATER_BYTES: Final = 256 * 1024
"""Pause reading from the engine above this much unconsumed body (our choice: a few hundred
SSE chunks; flow control only matters for clients slower than the engine)."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """``TCP_NODELAY`` on a transport's TCP socket: a request written in pieces (head, body)
    must not wait for the engine's delayed ACK. asyncio sets it only on sockets created with
    protocol ``IPPROTO_TCP``; setting it here does not depend on the event loop."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an engine; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type: str | None = None
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.failure: Exception | None = None
        self.idle_since = 0.0
        self._chunks: deque[bytes] = deque()
        self._buffered_bytes = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnreachable(f"unparsable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamUnreachable(f"connection closed by the engine ({exc or 'EOF'})"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered_bytes += len(body)
        if self._buffered_bytes > _HIGH_WATER_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- used by the client ---------------------------------------------------------------------

    def reset(self) -> None:
        """Prepare a pooled connection for its next request."""
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = None
        self.headers_done = self.complete = self.keep_alive = False
        self.failure = None
        self._chunks.clear()
        self._buffered_bytes = 0

    async def wait(self, timeout_s: float) -> None:
        """Until something new arrived (headers, body, end, failure); raises on failure."""
        if self.failure is not None:
            raise self.failure
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiter
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from the engine within {timeout_s:g} s") from None
        finally:
            self._waiter = None
        if self.failure is not None:
            raise self.failure

    def take(self) -> bytes | None:
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        self._buffered_bytes -= len(chunk)
        if self._paused and self._buffered_bytes <= _HIGH_WATER_BYTES // 2:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, failure: Exception) -> None:
        if self.failure is None:
            self.failure = failure
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Response:
    __slots__ = ("_client", "_conn", "_key", "_read_timeout_s")

    def __init__(self, client: RawUpstream, key: tuple[str, int], conn: _Connection) -> None:
        self._client = client
        self._key = key
        self._conn = conn
        self._read_timeout_s = client.read_timeout_s

    @property
    def status(self) -> int:
        return self._conn.status

    @property
    def content_type(self) -> str | None:
        return self._conn.content_type

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            chunk = conn.take()
            if chunk is not None:
                yield chunk
                continue
            if conn.complete:
                return
            await conn.wait(self._read_timeout_s)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed and conn.take() is None:
            self._client.release(self._key, conn)
        else:
            conn.close()


class RawUpstream:
    """Forwarding client on asyncio + httptools (see the module docstring)."""

    name = "raw"

    def __init__(self, settings: ProxySettings) -> None:
        self.connect_timeout_s = settings.upstream_connect_timeout_s
        self.read_timeout_s = settings.upstream_read_timeout_s
        self._max_idle = settings.upstream_max_connections
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._idle_count = 0
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}

    def _target(self, url: str) -> tuple[tuple[str, int], bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamUnreachable(f"only http:// engine URLs are supported, got {url!r}")
            port = parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"POST {path} HTTP/1.1\r\nhost: {parts.hostname}:{port}\r\n".encode("latin-1")
            target = ((parts.hostname, port), head)
            if len(self._targets) < 1024:  # a handful of engines x paths in practice
                self._targets[url] = target
        return target

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        if idle:
            # oldest first: drop the ones idle too long, reuse the first fresh one.
            stale_before = loop.time() - _IDLE_REUSE_S
            while idle:
                conn = idle.popleft()
                self._idle_count -= 1
                if conn.closed:
                    continue
                if conn.idle_since < stale_before:
                    conn.close()
                    continue
                conn.reset()
                return conn
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, key[0], key[1])
        except TimeoutError:
            raise UpstreamTimeout(
                f"no connection to {key[0]}:{key[1]} within {self.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {key[0]}:{key[1]}: {exc}") from None
        return conn

    def release(self, key: tuple[str, int], conn: _Connection) -> None:
        if self._idle_count >= self._max_idle:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(key, deque()).append(conn)
        self._idle_count += 1

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        key, head = self._target(url)
        conn = await self._connect(key)
        lines = [head]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        assert conn.transport is not None
        conn.transport.write(b"".join(lines))
        try:
            while not conn.headers_done:
                await conn.wait(self.read_timeout_s)
        except BaseException:
            conn.close()
            raise
        return _Response(self, key, conn)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
