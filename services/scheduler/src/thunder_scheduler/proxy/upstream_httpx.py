"""``UpstreamClient`` on httpx: one ``AsyncClient`` with a connection pool.

Timeouts map one to one: ``connect`` = connect timeout, ``read`` = the longest silence
between two reads, ``pool`` = the connect timeout (waiting for a free pooled connection),
``write`` = the read timeout. Bodies are read raw (``aiter_raw``: no decoding); the router
asks engines for an identity encoding anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from thunder_scheduler.proxy.settings import ProxySettings
from thunder_scheduler.proxy.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable

__all__ = ["HttpxUpstream"]


def _map_error(exc: httpx.TransportError) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(str(exc) or type(exc).__name__)
    return UpstreamUnreachable(str(exc) or type(exc).__name__)


class _Response:
    __slots__ = ("_done", "_resp")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self._done = False

    @property
    def status(self) -> int:
        return self._resp.status_code

    @property
    def content_type(self) -> str | None:
        value: str | None = self._resp.headers.get("content-type")
        return value

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise _map_error(exc) from exc

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._resp.aiter_raw()])
        except httpx.TransportError as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        # httpx closes (not pools) a connection whose body was not read to the end.
        await self._resp.aclose()


class HttpxUpstream:
    """Forwarding client on httpx (kept for comparison; see ``bench/results/proxy``)."""

    name = "httpx"

    def __init__(self, settings: ProxySettings) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_connections,
            ),
            timeout=httpx.Timeout(
                connect=settings.upstream_connect_timeout_s,
                read=settings.upstream_read_timeout_s,
                write=settings.upstream_read_timeout_s,
                pool=settings.upstream_connect_timeout_s,
            ),
        )

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        request = self._client.build_request("POST", url, content=body, headers=dict(headers))
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _map_error(exc) from exc
        return _Response(resp)

    async def aclose(self) -> None:
        await self._client.aclose()
