"""The service's own connections, on real loopback sockets: ``TCP_NODELAY`` on every accepted
connection, deadlines for a request head and body (a stalled socket gets 408 and is closed),
and a limit on open connections (503 beyond it)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import orjson
import pytest
from fixtures.scheduler_service import RunningService

from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.sockets import sockets_of_this_process

WAIT_S = 20.0  # a bound so a broken server fails the test instead of hanging it


def _peer_of(client: socket.socket) -> socket.socket:
    """The server side of ``client``'s connection (the service runs in this process)."""
    for sock in sockets_of_this_process():
        try:
            if (sock.getsockname() == client.getpeername()
                    and sock.getpeername() == client.getsockname()):
                return sock
        except OSError:
            pass
        sock.close()
    raise AssertionError("the server side of the connection was not found")


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


@pytest.fixture
def service(scheduler_service: Callable[..., RunningService]) -> Callable[..., RunningService]:
    def start(**fields: object) -> RunningService:
        return scheduler_service(load_settings(fields))
    return start


def test_accepted_connections_have_tcp_nodelay(service: Callable[..., RunningService]) -> None:
    running = service()
    with _connect(running.url) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        server_side = _peer_of(client)
        with server_side:
            assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_stalled_request_head_gets_408_and_is_closed(
    service: Callable[..., RunningService],
) -> None:
    running = service(header_timeout_s=0.5)
    with _connect(running.url) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # never finished
        status, body = _status_and_body(_read_all(client))
    assert status == 408
    assert "request head" in body["error"]["message"]  # type: ignore[index]


def test_a_body_shorter_than_its_length_gets_408_and_is_closed(
    service: Callable[..., RunningService],
) -> None:
    running = service(body_timeout_s=0.5)
    with _connect(running.url) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                       b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mod")
        status, body = _status_and_body(_read_all(client))
    assert status == 408
    assert "request body" in body["error"]["message"]  # type: ignore[index]
    # the service is still fine for others
    assert httpx.get(f"{running.url}/health", timeout=WAIT_S).status_code == 200


def test_connections_beyond_the_limit_are_refused_with_503(
    service: Callable[..., RunningService],
) -> None:
    running = service(max_connections=3, header_timeout_s=60)
    stalled = [_connect(running.url) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /heal")  # stalled mid-head, holding the connection
        with _connect(running.url) as extra:
            status, body = _status_and_body(_read_all(extra))
        assert status == 503
        assert "max_connections" in body["error"]["message"]  # type: ignore[index]
    finally:
        stalled.pop().close()
    try:
        # one left: a next connection is served (once the server saw the close)
        def served() -> bool:
            with _connect(running.url) as client:
                client.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                return _read_all(client)[:12] == b"HTTP/1.1 200"

        until(served, timeout_s=WAIT_S, interval_s=0.01, what="a new connection to be served")
    finally:
        for sock in stalled:
            sock.close()


def test_bytes_that_are_not_http_get_a_json_400(service: Callable[..., RunningService]) -> None:
    running = service()
    with _connect(running.url) as client:
        client.sendall(b"HELLO THERE\r\n\r\n")
        status, body = _status_and_body(_read_all(client))
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_the_open_files_limit_is_checked_against_the_connection_limit() -> None:
    import resource

    from thunder_scheduler.serving import ensure_fd_room

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert ensure_fd_room(16) is None
        if hard != resource.RLIM_INFINITY:
            warning = ensure_fd_room(hard + 1)
            assert warning is not None and "--max-connections" in warning
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
