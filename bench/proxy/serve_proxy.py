"""Run the proxy under test in one uvicorn worker (uvloop + httptools), for the benchmark.

Modes:

* ``service``: the real service, ``thunder_scheduler.app.create_app`` with the default
  settings (default policy) and ``--backend sglang=ENGINE``; the upstream client from
  ``--client``.
* ``bare``: only the proxy's endpoints in a minimal ``FastPathApp`` (as in the service), with
  :class:`PassThroughGate`, a trivial gate that places every request on the one backend and
  records nothing: it isolates the data plane's own cost from the scheduler's.

Prints ``listening on http://127.0.0.1:<port>`` once listening (port 0: a free one).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from thunder_scheduler.backends.base import RequestHints
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.gate import Placement, Usage
from thunder_scheduler.proxy import (
    FastPathApp,
    ProxyEndpoints,
    ProxySettings,
    create_upstream_client,
)
from thunder_scheduler.serving import listen_socket
from thunder_scheduling.events import RequestOutcome


class PassThroughGate:
    """A trivial ``RequestGate``: every request goes to the one backend; nothing is tracked."""

    def __init__(self, backend: SGLangBackend) -> None:
        self._backend = backend
        self._seq = itertools.count(1)

    def new_request_id(self, program_id: str | None, client_id: str | None = None) -> str:
        return f"{program_id or 'bench'}:{next(self._seq)}"

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0

    async def acquire(
        self, program_id: str | None, request_id: str, body: Mapping[str, Any], model: str | None
    ) -> Placement:
        return Placement(self._backend, RequestHints(program_id, request_id))

    def finish(self, placement: Placement | None, program_id: str | None, request_id: str,
               outcome: RequestOutcome, usage: Usage | None, ends_with_tool_call: bool,
               **kwargs: Any) -> None:
        return None

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        return None

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        return None

    def models(self) -> list[dict[str, Any]]:
        return [{"id": "zero", "object": "model"}]


def build_app(mode: str, client: str, engine: str, state_file: str | None = None) -> FastAPI:
    if mode == "service":
        from thunder_scheduler.app import create_app
        from thunder_scheduler.settings import ServiceSettings

        return create_app(ServiceSettings(backends=[f"sglang={engine}"], upstream_client=client,
                                          state_file=state_file))
    settings = ProxySettings(upstream_client=client)  # type: ignore[arg-type]
    backend = SGLangBackend("zero", engine, httpx.AsyncClient())
    proxy = ProxyEndpoints(PassThroughGate(backend), create_upstream_client(settings), settings)
    app = FastPathApp()  # as in the service: hot POSTs served ahead of FastAPI's routing
    app.include_router(proxy.router())
    app.serve_proxy_first(proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["service", "bare"], default="service")
    parser.add_argument("--client", choices=["aiohttp", "httpx", "raw"], default="aiohttp")
    parser.add_argument("--engine", required=True, help="zero-work engine base URL")
    parser.add_argument("--state-file", default=None,
                        help="mode service: persist the program table there (default: off)")
    args = parser.parse_args()
    app = build_app(args.mode, args.client, args.engine, args.state_file)
    sock = listen_socket("127.0.0.1", 0)  # as `thunder-scheduler serve` listens (TCP_NODELAY)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", workers=1,
                            log_level="warning", access_log=False, backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
