"""``thunder-sim serve``: run one simulated SGLang engine behind its HTTP API.

Example: ``thunder-sim serve --preset h100-qwen3-8b --port 30000 --time-scale 20``.
With ``--port 0`` the OS picks a free port. Once listening, the server prints one line
``thunder-sim ready: http://HOST:PORT ...`` on stdout (the test fixture reads the port from it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from thunder_sim.clock import ScaledClock
from thunder_sim.server.app import ServerInfo, create_app
from thunder_sim.server.lag import LagSettings
from thunder_sim.server.runner import EngineLike, RunnerSettings

HELP = "serve a simulated SGLang engine (SGLang 0.5.23 HTTP API) on a port"

# Hugging Face ids reported as model_path / served_model_name, by ModelSpec.name.
HF_IDS = {
    "qwen3-8b": "Qwen/Qwen3-8B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "glm-4.6": "zai-org/GLM-4.6",
}
# What torch.cuda.get_device_name() returns on these GPUs (SGLang's /v1/loads "accelerator").
DEVICE_NAMES = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thunder_sim.costmodel.presets import PRESETS

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter  # "(default: X)" on every flag
    p.add_argument("--preset", default="h100-qwen3-8b", metavar="PRESET",
                   help="GPU / model / tensor-parallel preset, one of: " + ", ".join(PRESETS))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=30000,
                   help="port to listen on (0: any free port; 30000 is SGLang's)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="modelled seconds per wall second (20 = 20x faster than the GPU)")
    p.add_argument("--auto-time-scale", action="store_true",
                   help="lower the time scale when event-loop lag distorts results")
    p.add_argument("--min-time-scale", type=float, default=1.0,
                   help="floor for --auto-time-scale")
    p.add_argument("--served-model-name", default=None,
                   help="model name answered in /v1/models (None: --model-path, else the "
                        "preset's Hugging Face id); as SGLang 0.5.x, requests may name any "
                        "model and get it echoed back")
    p.add_argument("--model-path", default=None,
                   help="model path reported in /server_info (None: the preset's Hugging Face id)")
    p.add_argument("--context-length", type=int, default=None,
                   help="override the model's context length, tokens (None: the preset's)")
    p.add_argument("--max-total-tokens", type=int, default=None,
                   help="override the KV pool size in tokens, as SGLang's --max-total-tokens "
                        "(None: derived from GPU memory like SGLang)")
    p.add_argument("--max-running-requests", type=int, default=None,
                   help="most requests in a batch, as SGLang's flag (None: derived from the "
                        "pool like SGLang)")
    p.add_argument("--page-size", type=int, default=None,
                   help="tokens per KV page (None: the preset's, 64)")
    p.add_argument("--chunked-prefill-size", type=int, default=None,
                   help="most prompt tokens prefilled per step, as SGLang's flag "
                        "(None: the preset's)")
    p.add_argument("--enable-priority-scheduling", action="store_true",
                   help="order the waiting queue by request priority, as SGLang's flag")
    p.add_argument("--radix-eviction-policy", choices=["lru", "priority"], default=None,
                   help="which cached prefix is evicted first, as SGLang's flag (None: lru)")
    p.add_argument("--enable-hierarchical-cache", action="store_true",
                   help="HiCache: back the radix cache with a host-memory KV pool, as SGLang's "
                        "flag (off by default)")
    p.add_argument("--hicache-ratio", type=float, default=2.0,
                   help="host pool size / device pool size, as SGLang's flag (default 2.0)")
    p.add_argument("--hicache-size", type=int, default=0,
                   help="host pool size in GB, overrides --hicache-ratio when > 0 (SGLang's)")
    p.add_argument("--hicache-write-policy", default="write_through",
                   choices=["write_through", "write_back", "write_through_selective"],
                   help="when device KV is written to host, as SGLang's flag")
    p.add_argument("--default-max-tokens", type=int, default=128,
                   help="output length of chat requests without max_tokens (the simulator "
                        "has no EOS); 128 is SGLang's SamplingParams default")
    p.add_argument("--min-step-ms", type=float, default=4.0,
                   help="fold decode iterations so one engine loop lasts at least this long "
                        "(wall ms); bounds Python overhead at high time scales")
    p.add_argument("--stream-interval", type=int, default=1,
                   help="send intermediate stream chunks every N tokens (SGLang's "
                        "--stream-interval), subject to --stream-interval-ms")
    p.add_argument("--stream-interval-ms", type=float, default=200.0,
                   help="and at most this often per request (wall ms); first tokens and ends "
                        "go out at once")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="log verbosity")


def _check(p: argparse.Namespace) -> None:
    def bad(flag: str, msg: str) -> None:
        raise SystemExit(f"thunder-sim serve: error: {flag} {msg}")

    if not 0 <= p.port <= 65535:
        bad("--port", f"must be in 0..65535, got {p.port}")
    if not p.time_scale > 0:
        bad("--time-scale", f"must be > 0, got {p.time_scale}")
    if not 0 < p.min_time_scale <= p.time_scale:
        bad("--min-time-scale", f"must be in (0, --time-scale], got {p.min_time_scale}")
    for flag in ("context_length", "max_total_tokens", "max_running_requests", "page_size",
                 "chunked_prefill_size", "default_max_tokens"):
        v = getattr(p, flag)
        if v is not None and v < 1:
            bad("--" + flag.replace("_", "-"), f"must be >= 1, got {v}")
    if p.stream_interval < 1:
        bad("--stream-interval", f"must be >= 1, got {p.stream_interval}")
    if p.min_step_ms < 0 or p.stream_interval_ms < 0:
        bad("--min-step-ms/--stream-interval-ms", "must be >= 0")


def build(args: argparse.Namespace) -> tuple[EngineLike, ServerInfo]:
    """The engine and what the server reports about it, from the command-line flags."""
    from thunder_sim.costmodel.presets import get_preset
    from thunder_sim.engine.config import EngineConfig
    from thunder_sim.engine.engine import Engine

    try:
        preset = get_preset(args.preset)
    except ValueError as e:
        raise SystemExit(f"thunder-sim serve: error: --preset: {e}") from None
    overrides: dict[str, Any] = {}
    for flag, field in (("max_total_tokens", "kv_pool_tokens"),
                        ("max_running_requests", "max_running_requests"),
                        ("page_size", "page_tokens"),
                        ("chunked_prefill_size", "chunked_prefill_size"),
                        ("radix_eviction_policy", "eviction_policy")):
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    if args.enable_priority_scheduling:
        overrides["enable_priority_scheduling"] = True
    if args.enable_hierarchical_cache:
        overrides.update(enable_hierarchical_cache=True, hicache_ratio=args.hicache_ratio,
                         hicache_size=args.hicache_size,
                         hicache_write_policy=args.hicache_write_policy)
    try:
        config = EngineConfig.from_preset(args.preset, **overrides)
    except ValueError as e:
        raise SystemExit(f"thunder-sim serve: error: {e}") from None
    engine = Engine(config, preset.cost_model())
    hf_id = HF_IDS.get(preset.model.name, preset.model.name)
    info = ServerInfo(
        model_path=args.model_path or hf_id,
        served_model_name=args.served_model_name or args.model_path or hf_id,
        preset=args.preset,
        accelerator=DEVICE_NAMES.get(preset.gpu.name, preset.gpu.name),
        tp_size=preset.tp,
        page_size=config.page_tokens,
        context_length=args.context_length or preset.model.context_len,
        max_total_num_tokens=config.kv_pool_tokens,
        max_running_requests=config.max_running_requests,
        chunked_prefill_size=config.chunked_prefill_size,
        max_prefill_tokens=config.max_prefill_tokens,
        host=args.host,
        port=args.port,
        default_max_tokens=args.default_max_tokens,
        enable_hierarchical_cache=config.enable_hierarchical_cache,
        hicache_ratio=config.hicache_ratio,
        hicache_size=config.hicache_size,
        hicache_write_policy=config.hicache_write_policy,
        enable_priority_scheduling=config.enable_priority_scheduling,
        schedule_low_priority_values_first=config.schedule_low_priority_values_first,
        radix_eviction_policy=config.eviction_policy,
    )
    return engine, info


# Garbage collection: a full (generation 2) pass over the ~60k objects the imports create took
# ~145 ms on a busy 2-core machine, a stall the engine loop counts as lost GPU time. Startup
# objects are moved out of the collector's sight (gc.freeze, CPython docs: "allows to ... avoid
# full collections' cost" for long-lived state), and the young-generation threshold is raised
# from 700 to 10,000 allocations: request objects are freed by reference counting, a collection
# only finds cycles, so collecting 14x less often scans the same objects in fewer, ~1 ms pauses.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(args: argparse.Namespace) -> None:
    engine, info = build(args)
    clock = ScaledClock(args.time_scale)
    app = create_app(
        engine, info, clock,
        RunnerSettings(min_step_wall_s=args.min_step_ms / 1000,
                       stream_interval_tokens=args.stream_interval,
                       stream_interval_wall_s=args.stream_interval_ms / 1000),
        LagSettings(auto_time_scale=args.auto_time_scale, min_time_scale=args.min_time_scale),
    )
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    tune_gc()
    site = web.TCPSite(runner, args.host, args.port, backlog=2048)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise SystemExit(f"thunder-sim serve: error: --port {args.port}: {e}") from None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else args.port
    print(f"thunder-sim ready: http://{args.host}:{port} preset={info.preset} "
          f"model={info.served_model_name} time_scale={clock.time_scale:g} "
          f"kv_pool_tokens={info.max_total_num_tokens} page_size={info.page_size}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    _check(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(serve(args))
    return 0
