"""The upstream HTTP client interface: how the proxy talks to an engine.

One tiny Protocol (``UpstreamClient.send`` returns an ``UpstreamResponse`` whose body is
read in pieces as they arrive), one implementation per module (``upstream_aiohttp``,
``upstream_httpx``, ``upstream_raw``: asyncio + httptools), selected by name from
``UPSTREAM_CLIENTS``. The default is the one that
won the side-by-side benchmark (``bench/results/proxy/results.md``).

Failures are mapped to two exception types so the router needs no client-specific code:

* :class:`UpstreamUnreachable`: the connection could not be opened, or broke before the
  response headers arrived (the router answers 502 naming the backend);
* :class:`UpstreamTimeout`: no connection within ``upstream_connect_timeout_s`` or no byte
  within ``upstream_read_timeout_s`` (504).

A failure after the headers (the engine died mid-stream) surfaces from ``chunks()`` /
``read()`` as the same two types.

Closing a response that has not been read to the end closes its connection rather than
returning it to the pool: that is how an engine learns a client left (vLLM aborts the request
when its connection closes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from thunder_scheduler.extras import require_extra
from thunder_scheduler.proxy.settings import ProxySettings, UpstreamClientName

__all__ = [
    "UPSTREAM_CLIENTS",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "create_upstream_client",
]


class UpstreamError(Exception):
    """Base of the failures an upstream client reports."""


class UpstreamUnreachable(UpstreamError):
    """Connection refused, reset, or closed before a complete answer."""


class UpstreamTimeout(UpstreamError):
    """No connection or no byte within the configured time."""


class UpstreamResponse(Protocol):
    """An engine's answer whose headers arrived; the body is read with ``chunks``/``read``."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str | None: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, in whatever pieces the network delivers."""
        ...

    async def read(self) -> bytes:
        """The whole body."""
        ...

    async def aclose(self) -> None:
        """Release the response: back to the pool if fully read, else close the connection."""
        ...


class UpstreamClient(Protocol):
    """A pooled HTTP client for forwarding requests to engines (one per service)."""

    name: str

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST ``body`` to ``url``; return once the response headers arrived."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


def _aiohttp(settings: ProxySettings) -> UpstreamClient:
    require_extra("aiohttp", "upstream_client 'aiohttp'")
    from thunder_scheduler.proxy.upstream_aiohttp import AiohttpUpstream

    return AiohttpUpstream(settings)


def _httpx(settings: ProxySettings) -> UpstreamClient:
    from thunder_scheduler.proxy.upstream_httpx import HttpxUpstream

    return HttpxUpstream(settings)


def _raw(settings: ProxySettings) -> UpstreamClient:
    from thunder_scheduler.proxy.upstream_raw import RawUpstream

    return RawUpstream(settings)


UPSTREAM_CLIENTS: dict[UpstreamClientName, Callable[[ProxySettings], UpstreamClient]] = {
    "aiohttp": _aiohttp,
    "httpx": _httpx,
    "raw": _raw,
}


def create_upstream_client(settings: ProxySettings) -> UpstreamClient:
    """The client named by ``settings.upstream_client``."""
    return UPSTREAM_CLIENTS[settings.upstream_client](settings)
