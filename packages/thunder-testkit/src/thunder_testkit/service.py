"""The real scheduler service in this process: ``create_app(settings)`` served by uvicorn on a
free loopback port in a background thread (its own event loop), the way ``serve`` runs it.

``start_service_thread(settings, **create_app_kwargs) -> RunningService``; ``RunningService.app``
gives a test the app's parts (``app.state.thunder``) for white-box checks, ``call(fn)`` runs
``fn`` on the service's loop, and ``stop()`` runs the lifespan shutdown (monitor, driver,
clients).

``engineless_app(**settings)``: the real app with these settings, no engines and a manual clock
at 1,000 s (lifecycle, ops and auth need no engine). ``in_process_client(app)``: an app with
no socket and no thread: its lifespan running and an ``httpx.AsyncClient`` on it over ASGI, on
the test's own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI

from thunder_scheduler.app import create_app
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.serving import listen_socket, server_config
from thunder_scheduler.settings import ServiceSettings, load_settings
from thunder_testkit.polling import until

__all__ = ["RunningService", "engineless_app", "in_process_client", "start_service_thread"]

T = TypeVar("T")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass
class RunningService:
    """An in-process service: ``url`` to call, ``app`` for its parts."""

    url: str
    app: Any
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the service's event loop and return its result: a test steps the
        service's parts (``app.state.thunder.driver.tick``) without racing its tasks."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(STOP_TIMEOUT_S)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError("scheduler service thread did not stop")


def start_service_thread(settings: ServiceSettings, **create_app_kwargs: Any) -> RunningService:
    """Serve ``create_app(settings, **create_app_kwargs)`` on 127.0.0.1:<free port>."""
    app = create_app(settings, **create_app_kwargs)
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, settings, log_level="warning"))
    failure: list[BaseException] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"thunder-scheduler-{port}", daemon=True)
    thread.start()
    try:
        until(lambda: server.started or failure or not thread.is_alive(),
              timeout_s=START_TIMEOUT_S, interval_s=0.01, what="the scheduler service to start")
    except AssertionError:
        server.should_exit = True
        raise
    if not server.started:
        raise RuntimeError(f"scheduler service failed to start: {failure!r}")
    return RunningService(f"http://127.0.0.1:{port}", app, server, thread, loops[0])


def engineless_app(**settings: Any) -> FastAPI:
    """The real scheduler app with ``settings``, no engines, a ``ManualClock`` at 1,000 s."""
    return create_app(load_settings(settings), backends=[], clock=ManualClock(1000.0))


@asynccontextmanager
async def in_process_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running and an httpx client on it over ASGI (no sockets)."""
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://thunder.test"
    ) as client:
        yield client
