"""The proxy's hot endpoints served in front of FastAPI: one dict lookup, then the handler.

Why. A proxied request through the full FastAPI stack pays, besides the proxy's own work,
the app's middleware chain (server-error, telemetry, body-limit, exception and exit-stack
middleware, each wrapping ``send``), route matching over every route of the service (ops,
lifecycle, tools) and the per-route request/response wrapper. Profiled under ``wrk`` against
the zero-work engine (py-spy, ``bench/results/proxy/README.md``), that was about half of the
service's CPU per non-streaming request, more than the proxy's own handler.

What. :class:`FastPathApp` is a ``FastAPI`` whose ``__call__`` first asks the bound
:class:`~thunder_scheduler.proxy.routes.ProxyEndpoints` whether the request is a ``POST`` to
``/v1/chat/completions``, ``/v1/completions`` or ``/generate`` (exact path); if so, the
optional ``admit`` check runs (the client API key: it returns the refusal response, or None)
and the proxy's handler serves the request as a pure ASGI app. Everything else, including
other methods on those paths (405), ``/v1/models`` and every other route, goes through
FastAPI unchanged. The routes stay registered on the FastAPI router too, so the OpenAPI
schema lists them and an app without the fast path behaves the same.

Same behaviour either way: the handler, its error bodies, its 413/400 checks and the key
check (``thunder_scheduler.auth.require_key``, rendered by ``errors.error_response``) are the
ones the FastAPI routes use; only the machinery around them is skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from thunder_scheduler.proxy.routes import ProxyEndpoints

__all__ = ["AdmitCheck", "FastPathApp"]

AdmitCheck = Callable[[Scope, Receive], Awaitable[Response | None]]
"""Runs before the proxy handler: a response refuses the request (401), None lets it in."""


class FastPathApp(FastAPI):
    """A FastAPI app that serves the proxy's hot ``POST`` endpoints before its own stack."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proxy: ProxyEndpoints | None = None
        self._admit: AdmitCheck | None = None

    def serve_proxy_first(self, proxy: ProxyEndpoints, admit: AdmitCheck | None = None) -> None:
        """Route the hot proxy requests straight to ``proxy`` (after ``admit``, if given)."""
        self._proxy = proxy
        self._admit = admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self._proxy
        if proxy is not None:
            endpoint = proxy.hot_endpoint(scope)
            if endpoint is not None:
                if self._admit is not None:
                    refusal = await self._admit(scope, receive)
                    if refusal is not None:
                        await refusal(scope, receive, send)
                        return
                await proxy.serve(scope, receive, send, endpoint)
                return
        await super().__call__(scope, receive, send)
