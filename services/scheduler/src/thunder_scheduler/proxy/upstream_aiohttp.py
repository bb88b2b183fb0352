"""``UpstreamClient`` on aiohttp: one ``ClientSession`` with a pooled ``TCPConnector``.

The session is created on the first ``send`` (aiohttp binds it to the running event loop).
Timeouts: ``sock_connect`` = connect timeout, ``sock_read`` = the longest silence between two
reads; no total timeout (a long generation is fine as long as bytes keep coming).
Bodies are passed through undecoded (``auto_decompress=False``); the router asks engines for
an identity encoding anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from thunder_scheduler.proxy.settings import ProxySettings
from thunder_scheduler.proxy.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable

__all__ = ["AiohttpUpstream"]


def _map_error(exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError):  # ServerTimeoutError, ConnectionTimeoutError
        return UpstreamTimeout(str(exc) or type(exc).__name__)
    return UpstreamUnreachable(str(exc) or type(exc).__name__)


class _Response:
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def content_type(self) -> str | None:
        return self._resp.headers.get("Content-Type")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc) from exc

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()
        else:
            self._resp.close()


class AiohttpUpstream:
    """Forwarding client on aiohttp (compared with the others in ``bench/results/proxy``)."""

    name = "aiohttp"

    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self._settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.upstream_max_connections, limit_per_host=0
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=settings.upstream_connect_timeout_s,
                    sock_read=settings.upstream_read_timeout_s,
                ),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # engines set no cookies; skip the jar
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        try:
            resp = await self._get_session().post(url, data=body, headers=headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc) from exc
        return _Response(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
