"""The SGLang router's worker API, so an RL framework can use the scheduler's URL as the router's.

RL frameworks (slime, verl, SkyRL) start SGLang engines, put ``sglang-router`` in front of them,
register each engine with the router and send rollouts to it (``/generate`` with ``input_ids``,
or the OpenAI routes); between training steps they update the engines' weights. The data plane
is the proxy's (``proxy/routes.py``: ``/generate`` is attributed and scheduled like
``/v1/chat/completions``); this module serves the router's control plane, with the names and
shapes of ``sgl-router``'s ``server.rs`` (``thunder_core.contract.RouterPaths``):

* ``POST /add_worker?url=U`` (or a ``{"url"}`` body), ``POST /workers {"url"}``: a new engine
  becomes an SGLang backend named like ``--backend sglang=U`` would name it; it joins the
  monitor (probed, then polled) and, once healthy, the scheduler. Adding a URL that is already
  monitored changes nothing. Answers 200 (text for the legacy path, ``{"success", "message"}``
  for ``/workers``); a bad URL is 400 with the reason.
* ``POST /remove_worker?url=U``, ``DELETE /workers/{url}``: the engine is drained, not dropped:
  the monitor stops polling it and reports it unhealthy, so the core pauses its programs (their
  next requests are held, none is ended); adding the URL again re-admits them. 404 for a URL
  that is not a worker.
* ``GET /list_workers`` (``{"urls"}``), ``GET /workers`` (``{"workers", "total", "stats"}``),
  ``GET /workers/{url}``.
* ``POST /flush_cache`` (``?url=`` for one engine): forwards SGLang's ``/flush_cache`` to every
  monitored healthy engine and, for each that flushed, feeds the core ``BackendFlushed``.

A weight update. However the framework does it, the scheduler forgets every cached-prefix
assumption about an engine that comes back: an engine that was unhealthy or removed and becomes
healthy again gets ``BackendFlushed`` (its cache is empty after a restart, and may be stale after
a weight update); so does one flushed through ``/flush_cache``. Its programs stay its programs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from thunder_core.contract import RouterPaths
from thunder_scheduler.backends.base import Backend, BackendKind
from thunder_scheduler.backends.monitor import BackendMonitor, BackendState
from thunder_scheduler.backends.registry import make_backend, parse_backend_spec
from thunder_scheduler.driver import Driver
from thunder_scheduler.errors import ServiceError
from thunder_scheduling.events import BackendFlushed

__all__ = ["ROUTER_PREFIXES", "RouterApi", "create_router_api"]

log = logging.getLogger(__name__)

ROUTER_PREFIXES = (
    RouterPaths.ADD_WORKER, RouterPaths.REMOVE_WORKER, RouterPaths.LIST_WORKERS,
    RouterPaths.WORKERS, RouterPaths.FLUSH_CACHE,
)
"""Paths guarded by the admin key (they change the fleet)."""

FLUSH_TIMEOUT_S = 30.0
"""SGLang flushes in well under a second; a generous bound for a busy engine."""


def _normal(url: str) -> str:
    return url.strip().rstrip("/")


class RouterApi:
    """The worker endpoints over the monitor and the driver (see the module docstring)."""

    def __init__(self, monitor: BackendMonitor, driver: Driver, http: httpx.AsyncClient,
                 options: Callable[[str], dict[str, Any]]) -> None:
        self.monitor = monitor
        self.driver = driver
        self.http = http
        self.options = options
        """The settings a new backend of a kind is built with (``app.backend_options``)."""
        self._was_down: set[str] = set()
        self._seen_healthy: set[str] = set()
        monitor.subscribe(self._on_change)

    # -- weight updates ----------------------------------------------------------------------

    async def _on_change(self, name: str, state: BackendState) -> None:
        """An engine back after being away (restart, weight update, removal) has an empty or
        stale cache: the core forgets what it assumed cached there."""
        if not state.healthy:
            if name in self._seen_healthy:
                self._was_down.add(name)
            return
        self._seen_healthy.add(name)
        if name in self._was_down:
            self._was_down.discard(name)
            self._flushed(name)

    def _flushed(self, name: str) -> None:
        log.info("backend %s flushed: cached-prefix assumptions dropped", name)
        self.driver.feed(BackendFlushed(at=self.driver.now(), backend=name))

    # -- workers -----------------------------------------------------------------------------

    def _by_url(self, url: str) -> str | None:
        wanted = _normal(url)
        for name, backend in self.driver.backends.items():
            if _normal(backend.base_url) == wanted:
                return name
        return None

    def active_name(self, url: str) -> str:
        """The backend name of the monitored worker at ``url`` (404 if there is none)."""
        name = self._by_url(url)
        if name is None or name not in self.monitor.active_names():
            raise ServiceError(404, f"no worker with url {url!r}")
        return name

    async def add(self, url: str) -> str:
        """Add (or re-admit) the engine at ``url``; its backend name."""
        kind = BackendKind.SGLANG.value
        try:
            spec = parse_backend_spec(f"{kind}={url}")
        except ValueError as exc:
            raise ServiceError(400, f"invalid worker url {url!r}: {exc}") from None
        name = self._by_url(spec.url)
        if name is not None:
            if name not in self.monitor.active_names():
                await self.monitor.add(self.driver.backends[name])
                log.info("worker %s (%s) re-added", name, spec.url)
            return name
        if spec.name in self.driver.backends:
            raise ServiceError(409, f"a backend named {spec.name!r} already exists")
        backend: Backend = make_backend(kind, spec.name, spec.url, self.http, **self.options(kind))
        self.driver.backends[spec.name] = backend
        await self.monitor.add(backend)
        log.info("worker %s (%s) added", spec.name, spec.url)
        return spec.name

    async def remove(self, url: str) -> str:
        name = self.active_name(url)
        await self.monitor.remove(name)
        log.info("worker %s (%s) removed: its programs are paused", name, url)
        return name

    def urls(self) -> list[str]:
        return [self.driver.backends[name].base_url for name in self.monitor.active_names()]

    def describe(self, name: str) -> dict[str, Any]:
        state = self.monitor.state(name)
        models = state.info.models if state.info is not None else ()
        running = state.load.running_requests if state.load is not None else None
        return {
            "url": self.driver.backends[name].base_url,
            "name": name,
            "model_id": models[0] if models else "unknown",
            "worker_type": "regular",
            "is_healthy": state.healthy,
            "load": running or 0,
            "connection_mode": "Http",
        }

    async def flush(self, url: str | None) -> dict[str, Any]:
        names = [self.active_name(url)] if url is not None else self.monitor.healthy_names()
        flushed: list[str] = []
        failed: dict[str, str] = {}
        for name in names:
            backend = self.driver.backends[name]
            try:
                answer = await self.http.post(backend.base_url + RouterPaths.FLUSH_CACHE,
                                              timeout=FLUSH_TIMEOUT_S)
            except httpx.HTTPError as exc:
                failed[name] = f"unreachable: {exc!r}"
                continue
            if answer.status_code >= 400:
                failed[name] = f"answered {answer.status_code}: {answer.text[:200]}"
                continue
            flushed.append(name)
            self._flushed(name)
        return {"flushed": flushed, "failed": failed}


async def _url_of(request: Request) -> str:
    """The worker URL: query parameter ``url``, else a JSON body's ``url`` (400 if neither)."""
    url = request.query_params.get(RouterPaths.URL_PARAM)
    if url is None:
        raw = await request.body()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ServiceError(400, "malformed JSON body") from None
            url = body.get(RouterPaths.URL_PARAM) if isinstance(body, dict) else None
    if not isinstance(url, str) or not url.strip():
        raise ServiceError(400, f"worker url required: query parameter or body field "
                                f"{RouterPaths.URL_PARAM!r}")
    return url


def create_router_api(api: RouterApi) -> APIRouter:
    router = APIRouter(tags=["router"])

    async def add_worker(request: Request) -> Response:
        url = await _url_of(request)
        await api.add(url)
        return PlainTextResponse(f"Successfully added worker: {url}")

    async def remove_worker(request: Request) -> Response:
        url = await _url_of(request)
        await api.remove(url)
        return PlainTextResponse(f"Successfully removed worker: {url}")

    async def list_workers() -> Response:
        return JSONResponse({"urls": api.urls()})

    async def create_worker(request: Request) -> Response:
        url = await _url_of(request)
        name = await api.add(url)
        return JSONResponse({"success": True, "message": f"Worker {url} added as {name}",
                             "worker": api.describe(name)})

    async def workers() -> Response:
        rows = [api.describe(name) for name in api.monitor.active_names()]
        return JSONResponse({"workers": rows, "total": len(rows), "stats": {
            "prefill_count": 0, "decode_count": 0, "regular_count": len(rows)}})

    async def get_worker(url: str) -> Response:
        return JSONResponse(api.describe(api.active_name(unquote(url))))

    async def delete_worker(url: str) -> Response:
        url = unquote(url)
        await api.remove(url)
        return JSONResponse({"success": True, "message": f"Worker {url} removed successfully",
                             "worker": None})

    async def flush_cache(request: Request) -> Response:
        url = request.query_params.get(RouterPaths.URL_PARAM)
        result = await api.flush(url)
        if result["failed"]:
            raise ServiceError(502, "flush failed on " + ", ".join(
                f"{name} ({why})" for name, why in result["failed"].items()), detail=result)
        return JSONResponse(result)

    router.add_api_route(RouterPaths.ADD_WORKER, add_worker, methods=["POST"])
    router.add_api_route(RouterPaths.REMOVE_WORKER, remove_worker, methods=["POST"])
    router.add_api_route(RouterPaths.LIST_WORKERS, list_workers, methods=["GET"])
    router.add_api_route(RouterPaths.WORKERS, create_worker, methods=["POST"])
    router.add_api_route(RouterPaths.WORKERS, workers, methods=["GET"])
    router.add_api_route(RouterPaths.WORKER, get_worker, methods=["GET"])
    router.add_api_route(RouterPaths.WORKER, delete_worker, methods=["DELETE"])
    router.add_api_route(RouterPaths.FLUSH_CACHE, flush_cache, methods=["POST"])
    return router
