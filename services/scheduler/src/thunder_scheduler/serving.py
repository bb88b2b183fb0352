"""The HTTP server around the app: the listening socket and uvicorn with guarded connections.

uvicorn bounds the idle time between two requests of a kept-alive connection
(``timeout_keep_alive``) but nothing else: a client that sends half a request head, or a body
shorter than its ``Content-Length``, holds its connection (and a file descriptor) forever, and
its ``limit_concurrency`` still accepts every connection. :class:`GuardedHttpToolsProtocol`
(uvicorn's httptools protocol, one subclass) adds:

* a **header timeout**: from the connection's first byte (or its opening) to the end of the
  request head, at most ``header_timeout_s``;
* a **body timeout**: from the end of the head to the end of the body, at most
  ``body_timeout_s`` (a whole-body deadline, so a body trickled a byte at a time is cut too);
* a **connection limit**: a connection beyond ``max_connections`` open ones is answered 503
  at once and closed.

Bytes that are not HTTP get uvicorn's 400 in the same JSON shape. A request that runs out of
time gets ``408`` (``{"error": {...}}``, ``connection: close``) if
nothing of its answer was sent yet, and its connection is closed either way.

:func:`listen_socket` makes the listening socket with ``TCP_NODELAY`` (see there).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from thunder_core.contract import error_body
from thunder_scheduler.settings import ServiceSettings

__all__ = ["GuardedHttpToolsProtocol", "ensure_fd_room", "listen_socket", "server_config"]

FD_HEADROOM = 1024
"""File descriptors kept for everything but client connections: upstream connections (the
pool holds up to ``upstream_max_connections``), engine control clients, logs, the state file."""


def ensure_fd_room(max_connections: int) -> str | None:
    """Raise the soft open-files limit so ``max_connections`` clients fit (up to the hard
    limit); a warning when they cannot, else None. Past the limit ``accept`` fails with EMFILE
    before the connection limit's 503 could answer."""
    import resource

    wanted = max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (f"open-files limit {soft} is below max_connections {max_connections} + "
                f"{FD_HEADROOM}: lower --max-connections or raise the limit (ulimit -n)")
    return None


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections have ``TCP_NODELAY``.

    Created with ``IPPROTO_TCP`` (asyncio sets ``TCP_NODELAY`` only on sockets whose protocol
    says TCP; with protocol 0 it never does) and with ``TCP_NODELAY`` on the listener itself,
    which Linux copies to every accepted socket whatever event loop accepts it. Without it a
    response written in more than one piece waits for the client's delayed ACK (about 40 ms)
    on every request of a kept-alive connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _raw_error(status: int, phrase: str, message: str, code: str) -> bytes:
    body = orjson.dumps(error_body(status, message, code=code))
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header / body deadlines and a connection limit.

    The limits come from class attributes set by :func:`server_config` on a subclass made
    for one server (uvicorn builds the protocol from ``config.http`` with no extra arguments).
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = (f"too many connections: the server holds at most {self.max_connections} "
                       f"(setting max_connections)")
            transport.write(_raw_error(503, "Service Unavailable", message, "too_many_connections"))
            transport.close()
            return
        self._arm(self.header_timeout_s, "request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, in the service's one error shape."""
        self._disarm()
        self.transport.write(_raw_error(400, "Bad Request", msg, "bad_request"))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout_s, "request head")

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_body = True
        self._arm(self.body_timeout_s, "request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_body = False
        super().on_message_complete()

    def _arm(self, timeout_s: float, what: str) -> None:
        self._deadline = self.loop.call_later(timeout_s, self._expired, timeout_s, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, timeout_s: float, what: str) -> None:
        self._deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        started = cycle is not None and self._reading_body and cycle.response_started
        if not started:
            message = f"{what} not received within {timeout_s:g} s"
            transport.write(_raw_error(408, "Request Timeout", message, "request_timeout"))
        if cycle is not None and self._reading_body and not cycle.response_complete:
            cycle.disconnected = True  # the app sees http.disconnect and writes nothing more
            cycle.message_event.set()
        transport.close()


def server_config(app: Any, settings: ServiceSettings, log_level: str | None = None
                  ) -> uvicorn.Config:
    """The uvicorn configuration ``serve`` runs (tests that serve the app in-process use it
    too, with a quieter ``log_level``)."""
    protocol = type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.max_connections,
    })
    # loop "auto" picks uvloop (it comes with uvicorn[standard]); the access log (a line per
    # request) is on only at --log-level debug.
    return uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level or settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        backlog=min(4096, settings.max_connections),
    )
