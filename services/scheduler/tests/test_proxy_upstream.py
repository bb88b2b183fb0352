"""Both upstream clients (aiohttp, httpx) against a real loopback HTTP server (aiohttp.web).

One conformance suite, parametrised over ``UPSTREAM_CLIENTS``: body pieces arrive as the
server sends them (no buffering), failures map to ``UpstreamUnreachable`` / ``UpstreamTimeout``,
closing a response early closes its connection (the engine sees the client leave), and a
response read to the end returns its connection to the pool.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from thunder_scheduler.proxy import UPSTREAM_CLIENTS, ProxySettings, UpstreamClient
from thunder_scheduler.proxy.upstream import UpstreamTimeout, UpstreamUnreachable
from thunder_testkit.sockets import sockets_of_this_process


class Engine:
    """A tiny real HTTP server whose behaviour each test scripts."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.peers: list[int] = []
        self.bodies: list[bytes] = []
        self.cancelled = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else -1)
        if request.path == "/whole":
            return web.json_response({"ok": True})
        if request.path == "/slow":
            await asyncio.sleep(2)
            return web.json_response({"late": True})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        try:
            await self.release.wait()
            await response.write(b"data: two\n\n")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        await response.write_eof()
        return response


async def _serve() -> tuple[Engine, str, web.AppRunner]:
    state = Engine()
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return state, f"http://127.0.0.1:{port}", runner


@pytest.fixture
async def engine() -> AsyncIterator[tuple[Engine, str]]:
    state, url, runner = await _serve()
    yield state, url
    await runner.cleanup()


@pytest.fixture(params=sorted(UPSTREAM_CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    settings = ProxySettings(upstream_client=request.param, upstream_read_timeout_s=0.5,
                             upstream_connect_timeout_s=1.0)
    upstream = UPSTREAM_CLIENTS[request.param](settings)
    yield upstream
    await upstream.aclose()


async def test_pieces_arrive_as_sent_and_connection_is_reused(
    engine: tuple[Engine, str], client: UpstreamClient
) -> None:
    state, url = engine
    response = await client.send(f"{url}/stream", b'{"a":1}', {"content-type": "application/json"})
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    chunks = response.chunks()
    assert await asyncio.wait_for(anext(chunks), 2) == b"data: one\n\n"  # before "two" exists
    state.release.set()
    rest = b"".join([piece async for piece in chunks])
    assert rest == b"data: two\n\n"
    await response.aclose()
    again = await client.send(f"{url}/whole", b"{}", {})
    assert await again.read() == b'{"ok": true}'
    await again.aclose()
    assert state.bodies[0] == b'{"a":1}'
    assert state.peers[0] == state.peers[1]  # same pooled connection


async def test_closing_early_closes_the_connection(
    engine: tuple[Engine, str], client: UpstreamClient
) -> None:
    state, url = engine
    response = await client.send(f"{url}/stream", b"{}", {})
    await anext(response.chunks())
    await response.aclose()
    await asyncio.wait_for(state.cancelled.wait(), 5)  # the server saw the client leave


async def test_refused_connection_is_unreachable(client: UpstreamClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(UpstreamUnreachable):
            await client.send(f"http://127.0.0.1:{port}/x", b"{}", {})


async def test_silence_longer_than_the_read_timeout(
    engine: tuple[Engine, str], client: UpstreamClient
) -> None:
    _, url = engine
    with pytest.raises(UpstreamTimeout):
        response = await client.send(f"{url}/slow", b"{}", {})
        try:
            await response.read()
        finally:
            await response.aclose()


@pytest.mark.parametrize("name", sorted(UPSTREAM_CLIENTS))
def test_streaming_and_reuse_on_uvloop(name: str) -> None:
    """The same on uvloop, the loop uvicorn runs the service on (its transports differ)."""
    import uvloop

    async def scenario() -> None:
        state, url, runner = await _serve()
        upstream = UPSTREAM_CLIENTS[name](ProxySettings(upstream_client=name))  # type: ignore[arg-type]
        try:
            await test_pieces_arrive_as_sent_and_connection_is_reused((state, url), upstream)
        finally:
            await upstream.aclose()
            await runner.cleanup()

    uvloop.run(scenario())


async def test_raw_client_does_not_reuse_a_connection_idle_too_long(
    engine: tuple[Engine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from thunder_scheduler.proxy import upstream_raw

    state, url = engine
    monkeypatch.setattr(upstream_raw, "_IDLE_REUSE_S", 0.05)
    client = upstream_raw.RawUpstream(ProxySettings())
    try:
        for pause_s in (0.0, 0.0, 0.2):
            await asyncio.sleep(pause_s)
            response = await client.send(f"{url}/whole", b"{}", {})
            assert await response.read() == b'{"ok": true}'
            await response.aclose()
    finally:
        await client.aclose()
    assert state.peers[0] == state.peers[1]   # reused while fresh
    assert state.peers[2] != state.peers[1]   # a new connection after 0.2 s idle


async def test_upstream_connections_have_tcp_nodelay(
    engine: tuple[Engine, str], client: UpstreamClient
) -> None:
    """A request written in pieces must not wait for the engine's delayed ACK."""
    _, url = engine
    response = await client.send(f"{url}/whole", b"{}", {})
    await response.read()  # the connection stays open in the pool
    engine_port = int(url.rsplit(":", 1)[1])
    checked = 0
    for sock in sockets_of_this_process():
        with sock:
            try:
                peer = sock.getpeername()
            except OSError:
                continue
            if sock.family == socket.AF_INET and peer[1] == engine_port:
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                checked += 1
    await response.aclose()
    assert checked >= 1
