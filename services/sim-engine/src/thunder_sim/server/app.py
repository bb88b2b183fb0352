"""The SGLang-compatible HTTP app of the simulated engine (aiohttp).

aiohttp rather than FastAPI: on this project's 2-core machines a minimal aiohttp server
answered about 1.4x the requests/s of a minimal FastAPI app (engines-and-frameworks.md,
"Proxy throughput measured"), and the simulator must serve 256 streaming programs beside the
scheduler. Bodies are decoded with orjson and validated by hand (``parse.py``).

Endpoints (SGLang 0.5.23, ``sglang/srt/entrypoints/http_server.py`` and ``v1_loads.py``):
``POST /v1/chat/completions``, ``/v1/completions``, ``/generate``; ``GET /server_info``
(``/get_server_info``); ``GET /v1/loads``; ``GET /metrics``; ``POST /abort_request``;
``GET|POST /flush_cache``; ``GET|POST /open_session``, ``/close_session``; ``GET /health``,
``/health_generate``; ``GET /v1/models``, ``/v1/models/{model}``.

Errors: OpenAI routes answer 400 with SGLang's ``ErrorResponse`` (``{"object": "error",
"message", "type": "Bad Request", "param": null, "code": 400}``); native routes with
``{"error": {"message"}}`` (``_create_error_response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from thunder_sim.clock import ScaledClock
from thunder_sim.engine.types import LoadSnapshot
from thunder_sim.server.generation import GenerationApi, json_object
from thunder_sim.server.lag import LagMonitor, LagSettings
from thunder_sim.server.metrics import CONTENT_TYPE, SimMetrics
from thunder_sim.server.parse import ApiError, Limits
from thunder_sim.server.runner import EngineLike, EngineRunner, RunnerSettings

SGLANG_VERSION = "0.5.23"  # the API version this server mirrors
HEALTH_TIMEOUT_WALL_S = 20.0  # sglang HEALTH_CHECK_TIMEOUT default (SGLANG_HEALTH_CHECK_TIMEOUT)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What ``/server_info`` reports (SGLang ``server_args`` names)."""

    model_path: str
    served_model_name: str
    preset: str
    accelerator: str
    tp_size: int
    page_size: int
    context_length: int
    max_total_num_tokens: int
    max_running_requests: int
    chunked_prefill_size: int
    max_prefill_tokens: int
    host: str = "127.0.0.1"
    port: int = 30000
    default_max_tokens: int = 128
    enable_hierarchical_cache: bool = False
    hicache_ratio: float = 2.0
    hicache_size: int = 0
    hicache_write_policy: str = "write_through"
    enable_priority_scheduling: bool = False
    schedule_low_priority_values_first: bool = False
    radix_eviction_policy: str = "lru"

    def limits(self) -> Limits:
        return Limits(self.page_size, self.context_length, self.max_total_num_tokens,
                      self.default_max_tokens)


def _openai_error(message: str, status: int) -> web.Response:
    phrase = {400: "Bad Request", 404: "Not Found", 415: "Unsupported Media Type"}.get(
        status, "Error")
    return web.json_response(body=orjson.dumps(
        {"object": "error", "message": message, "type": phrase, "param": None, "code": status}
    ), status=status)


def _native_error(message: str, status: int) -> web.Response:
    return web.json_response(body=orjson.dumps({"error": {"message": message}}), status=status)


RUNNER_KEY = web.AppKey("runner", EngineRunner)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    openai = request.path.startswith("/v1/")
    try:
        if openai and request.method == "POST":
            media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                raise ApiError("Unsupported Media Type: Only 'application/json' is allowed")
        return await handler(request)
    except ApiError as e:
        return (_openai_error if openai else _native_error)(e.message, e.status)


class NativeApi:
    def __init__(self, runner: EngineRunner, info: ServerInfo, metrics: SimMetrics) -> None:
        self.runner = runner
        self.info = info
        self.metrics = metrics
        self.sessions: set[str] = set()
        self.started_at = time.time()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def health_generate(self, request: web.Request) -> web.Response:
        """Generate one token when idle, as SGLang does (skipped while requests run)."""
        if self.runner.in_flight:
            return web.Response(status=200)
        rid = f"HEALTH_CHECK_{uuid.uuid4().hex}"
        ticket = self.runner.submit(rid, (0,), 1, 1, stream=False)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_WALL_S):
                while ticket.finished is None:
                    await ticket.event.wait()
                    ticket.event.clear()
        except TimeoutError:
            return web.Response(status=503)
        finally:
            if ticket.finished is None:
                self.runner.abort(rid)
        return web.Response(status=200)

    def _server_args(self) -> dict[str, Any]:
        i = self.info
        return {
            "model_path": i.model_path, "tokenizer_path": i.model_path,
            "served_model_name": i.served_model_name, "host": i.host, "port": i.port,
            "tp_size": i.tp_size, "dp_size": 1, "pp_size": 1, "page_size": i.page_size,
            "context_length": i.context_length, "max_running_requests": i.max_running_requests,
            "chunked_prefill_size": i.chunked_prefill_size,
            "max_prefill_tokens": i.max_prefill_tokens, "enable_cache_report": True,
            "enable_metrics": True, "disaggregation_mode": "null",
            "enable_hierarchical_cache": i.enable_hierarchical_cache,
            "hicache_ratio": i.hicache_ratio, "hicache_size": i.hicache_size,
            "hicache_write_policy": i.hicache_write_policy,
            "hicache_io_backend": "kernel", "hicache_mem_layout": "layer_first",
            "hicache_storage_backend": None,
            "enable_priority_scheduling": i.enable_priority_scheduling,
            "schedule_low_priority_values_first": i.schedule_low_priority_values_first,
            "radix_eviction_policy": i.radix_eviction_policy,
            "thunder_sim_preset": i.preset, "thunder_sim_accelerator": i.accelerator,
            "thunder_sim_time_scale": self.runner.clock.time_scale,
        }

    async def server_info(self, request: web.Request) -> web.Response:
        load = self.runner.engine.load()
        state = {"last_gen_throughput": load.gen_throughput,
                 "memory_usage": {"token_capacity": load.max_total_num_tokens},
                 "num_running_reqs": load.num_running_reqs, "token_usage": load.token_usage}
        body = {
            **self._server_args(),
            "launch_command": f"thunder-sim serve --preset {self.info.preset}",
            "max_total_num_tokens": load.max_total_num_tokens,
            "max_req_input_len": self.info.context_length - 1,
            "startup_time": self.started_at,
            "internal_states": [state],
            "version": SGLANG_VERSION,
            "frontend": "python",
        }
        return web.json_response(body=orjson.dumps(body))

    def _load_dict(self, load: LoadSnapshot, include: set[str] | None) -> dict[str, Any]:
        c = self.runner.engine.counters
        d: dict[str, Any] = {
            "timestamp": time.time(), "dp_rank": 0,
            "num_running_reqs": load.num_running_reqs,
            "num_waiting_reqs": load.num_waiting_reqs,
            "num_waiting_uncached_tokens": 0,
            "num_used_tokens": load.num_used_tokens,
            "num_total_tokens": load.num_used_tokens,
            "num_active_tokens": load.num_used_tokens,
            "num_prealloc_ready_tokens": 0,
            "max_total_num_tokens": load.max_total_num_tokens,
            "max_running_requests": self.info.max_running_requests,
            "token_usage": round(load.token_usage, 4),
            "gen_throughput": load.gen_throughput,
            "cache_hit_rate": round(load.cache_hit_rate, 4),
            "utilization": round(load.num_running_reqs / self.info.max_running_requests, 4),
            "total_prefill_uncached_tokens": c.prompt_tokens - c.cached_tokens,
            "total_prefill_busy_us": 0,
            "decode_moments": None,
        }
        if include is None or "all" in include or "memory" in include:
            d["memory"] = {"weight_gb": 0.0, "kv_cache_gb": 0.0, "graph_gb": 0.0,
                           "token_capacity": load.max_total_num_tokens}
        if include is None or "all" in include or "queues" in include:
            d["queues"] = {"waiting": load.num_waiting_reqs, "grammar": 0, "paused": 0,
                           "retracted": 0, "prealloc_ready": 0}
        return d

    async def loads(self, request: web.Request) -> web.Response:
        valid = {"core", "memory", "spec", "lora", "disagg", "queues", "all"}
        raw = request.query.get("include")
        include = {s.strip() for s in raw.split(",")} if raw else None
        if include is not None and not include <= valid:
            raise ApiError(f"Invalid include sections: {include - valid}. "
                           f"Valid options: {sorted(valid)}")
        load = self._load_dict(self.runner.engine.load(), include)
        if request.query.get("format") == "prometheus":
            lines: list[str] = []
            for key, value in load.items():
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for sub, v in items:
                    if key == "dp_rank" or isinstance(v, bool) or not isinstance(v, int | float):
                        continue
                    name = f"sglang_{key}_{sub}" if sub else f"sglang_{key}"
                    lines += [f"# TYPE {name} gauge", f'{name}{{dp_rank="0"}} {v}']
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        body = {"timestamp": datetime.now(UTC).isoformat(), "version": SGLANG_VERSION,
                "accelerator": self.info.accelerator, "num_accelerators": self.info.tp_size,
                "loads": [load]}
        return web.json_response(body=orjson.dumps(body))

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def abort_request(self, request: web.Request) -> web.Response:
        body = json_object(await request.read())
        if body.get("abort_all"):
            self.runner.abort_all()
        else:
            rid = body.get("rid")
            if not isinstance(rid, str) or not rid:
                raise ApiError("rid must be a non-empty string (or pass abort_all: true)")
            self.runner.abort(rid)
        return web.Response(status=200)

    async def flush_cache(self, request: web.Request) -> web.Response:
        if self.runner.flush_cache():
            return web.Response(text=(
                "Cache flushed.\nPlease check backend logs for more details. (When there are "
                "running or waiting requests, the operation will not be performed.)\n"))
        return web.Response(status=400, text="Flush cache failed: requests are running or "
                            "waiting, so the cache was not flushed.\n")

    async def open_session(self, request: web.Request) -> web.Response:
        body = json_object(await request.read())
        cap = body.get("capacity_of_str_len")
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise ApiError("capacity_of_str_len is required and must be an integer")
        sid = body.get("session_id") or uuid.uuid4().hex
        if not isinstance(sid, str):
            raise ApiError("session_id must be a string")
        if sid in self.sessions:
            raise ApiError("Failed to open the session. Check if a session with the same id "
                           "is still open.")
        self.sessions.add(sid)
        opener = getattr(self.runner.engine, "open_session", None)
        if opener is not None:
            opener(sid)
        return web.json_response(body=orjson.dumps(sid))

    async def close_session(self, request: web.Request) -> web.Response:
        body = json_object(await request.read())
        sid = body.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise ApiError("session_id is required and must be a string")
        if sid in self.sessions:
            self.sessions.discard(sid)
            closer = getattr(self.runner.engine, "close_session", None)
            if closer is not None:
                closer(sid)
        return web.Response(status=200)

    def _card(self) -> dict[str, Any]:
        name = self.info.served_model_name
        return {"id": name, "object": "model", "created": int(self.started_at),
                "owned_by": "sglang", "root": name, "parent": None,
                "max_model_len": self.info.context_length}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(body=orjson.dumps({"object": "list", "data": [self._card()]}))

    async def model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.info.served_model_name:
            return web.json_response(status=404, body=orjson.dumps({"error": {
                "message": f"The model '{request.match_info['model']}' does not exist",
                "type": "invalid_request_error", "param": "model",
                "code": "model_not_found"}}))
        return web.json_response(body=orjson.dumps(self._card()))


def create_app(
    engine: EngineLike,
    info: ServerInfo,
    clock: ScaledClock,
    runner_settings: RunnerSettings | None = None,
    lag_settings: LagSettings | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=256 * 1024 * 1024)
    runner = EngineRunner(engine, clock, runner_settings, LagMonitor(clock, lag_settings))
    metrics = SimMetrics(runner, info.served_model_name)
    runner.on_finish = metrics.on_finish
    gen = GenerationApi(runner, info.limits(), info.served_model_name)
    native = NativeApi(runner, info, metrics)
    app[RUNNER_KEY] = runner
    r = app.router
    r.add_post("/v1/chat/completions", gen.chat)
    r.add_post("/v1/completions", gen.completions)
    r.add_post("/generate", gen.generate)
    r.add_put("/generate", gen.generate)
    r.add_get("/health", native.health)
    r.add_get("/health_generate", native.health_generate)
    r.add_get("/server_info", native.server_info)
    r.add_get("/get_server_info", native.server_info)
    r.add_get("/v1/loads", native.loads)
    r.add_get("/metrics", native.metrics_text)
    r.add_post("/abort_request", native.abort_request)
    for method in ("GET", "POST"):
        r.add_route(method, "/flush_cache", native.flush_cache)
        r.add_route(method, "/open_session", native.open_session)
        r.add_route(method, "/close_session", native.close_session)
    r.add_get("/v1/models", native.models)
    r.add_get("/v1/models/{model:.+}", native.model)

    async def on_startup(app: web.Application) -> None:
        runner.start()

    async def on_cleanup(app: web.Application) -> None:
        with contextlib.suppress(Exception):
            runner.abort_all()
        await runner.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
