"""``thunder-sim replay``: replay agent-session traces, virtual (default) or live over HTTP.

Examples::

    # virtual: the scheduling core + engine models on one virtual clock, no HTTP
    thunder-sim replay --policy thunder,round_robin --concurrency 8,16 --replicas 2
    # live: against a running scheduler (or a bare engine, or another proxy)
    thunder-sim replay --target http://127.0.0.1:8000 --time-scale 20 --concurrency 16

Every run prints the context-fit choice, the gap caps and (live) the time scale used, then a
table; ``--out DIR --name NAME`` also writes NAME.md, NAME.json and NAME.png there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tqdm import tqdm

from thunder_sim.replay.fit import QWEN3_8B_YARN_CONTEXT_TOKENS, ContextFit, FitResult
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import table, write
from thunder_sim.replay.tool_levers import TOOL_CALL_TRAILING_TOKENS, ToolLevers
from thunder_sim.replay.trace import TRACE_DIR_ENV, TraceError, default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

HELP = "Replay agent-session traces against the scheduler (virtual or live) and report."


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sessions (printed with every result)")
    g.add_argument("--traces", type=Path, default=None,
                   help=f"trace folder or file (default ${TRACE_DIR_ENV} or "
                        "data/traces/claude-code-sessions in the repo)")
    g.add_argument("--context-tokens", type=int, default=QWEN3_8B_YARN_CONTEXT_TOKENS,
                   help="drop sessions whose peak prompt+output exceeds this (default 131072: "
                        "Qwen3-8B with YaRN; 0 disables the filter)")
    g.add_argument("--token-scale", type=float, default=1.0,
                   help="multiply every token count by this factor in (0, 1] (default 1)")
    g.add_argument("--max-steps", type=int, default=None,
                   help="keep the first N steps of each program (default all)")
    g.add_argument("--sessions", type=int, default=None, help="replay at most N sessions")
    g.add_argument("--seed", type=int, default=None,
                   help="pick sessions in a seeded shuffle instead of file order")
    g.add_argument("--human-gap-cap-s", type=float, default=0.0,
                   help="cap on human think time before a text step (default 0)")
    g.add_argument("--tool-gap-cap-s", type=float, default=None,
                   help="cap on tool time (default none: the trace's gaps)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_fit_arguments(p)
    g = p.add_argument_group("run")
    g.add_argument("--concurrency", type=_ints, default=[8],
                   help="concurrent programs, comma-separated for a sweep (default 8)")
    g.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many modelled seconds, recycling sessions")
    g.add_argument("--out", type=Path, default=None, help="write NAME.md/.json/.png here")
    g.add_argument("--name", default="replay", help="report name (default replay)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--dry-run", action="store_true", help="load, fit and print; do not run")
    v = p.add_argument_group("virtual mode (default)")
    v.add_argument("--policy", default="thunder",
                   help="scheduler policies, comma-separated (default thunder)")
    v.add_argument("--replicas", type=int, default=2, help="simulated engines (default 2)")
    v.add_argument("--preset", default="h100-qwen3-8b", help="engine preset")
    v.add_argument("--kv-pool-tokens", type=int, default=None,
                   help="override the preset's KV pool size C")
    v.add_argument("--check-invariants", action="store_true",
                   help="check every engine's KV accounting after each step (slow)")
    v.add_argument("--streaming-dispatch", action="store_true",
                   help="start each tool when the engine has produced its call's last argument "
                        "token (rule: thunder_sim/replay/tool_levers.py)")
    v.add_argument("--prompt-split", action="store_true",
                   help="prefill the next prompt's known prefix while the tool runs "
                        "(prefill-only, lowest priority; rule: thunder_scheduling.prompt_split)")
    v.add_argument("--cache-hints", action="store_true",
                   help="send the adapter's back_in hint (the tool's duration) after each tool "
                        "start (thunder_sim/replay/tool_levers.py)")
    v.add_argument("--parallel-calls", type=int, default=1,
                   help="tool calls per tool-calling response, placed and timed by the rule of "
                        "thunder_sim/replay/tool_levers.py (default 1)")
    v.add_argument("--tool-call-trailing-tokens", type=int, default=TOOL_CALL_TRAILING_TOKENS,
                   help="output tokens after a tool call's last argument token "
                        f"(default {TOOL_CALL_TRAILING_TOKENS})")
    v.add_argument("--no-tool-events", dest="tool_events", action="store_false",
                   help="do not report tool calls to the scheduler (a plain client that only "
                        "sends requests, as one written for ThunderAgent's API)")
    live = p.add_argument_group("live mode (with --target)")
    live.add_argument("--target", default=None,
                      help="base URL of an OpenAI/SGLang-compatible server (our scheduler, a "
                           "bare engine, or another proxy)")
    live.add_argument("--time-scale", type=float, default=1.0,
                      help="the time scale the target's engines (and scheduler) run at; "
                           "a simulated engine's own scale (/server_info) wins and is followed "
                           "when --auto-time-scale lowers it")
    live.add_argument("--lifecycle", choices=["auto", "on", "off"], default="auto",
                      help="use the lifecycle API (auto: when GET /v1/programs answers 200)")
    live.add_argument("--thunderagent-release", action="store_true",
                      help="also POST /programs/release at each program's end")
    live.add_argument("--message-chars-per-token", type=float, default=0.0,
                      help="pad each request's message to this many characters per prompt "
                           "token (about 4 for real text), for a proxy that estimates tokens "
                           "from the body's size (ThunderAgent); 0: a short placeholder")
    live.add_argument("--engine-url", action="append", default=[],
                      help="a simulated engine behind the target, for its /metrics (repeat)")
    live.add_argument("--model", default=None,
                      help="model field of each request (default: the first model the "
                           "target's /v1/models lists)")


def load_fit(args: argparse.Namespace) -> FitResult:
    fit = ContextFit(
        context_tokens=args.context_tokens or None, token_scale=args.token_scale,
        max_steps=args.max_steps, sessions=args.sessions, seed=args.seed,
    )
    return fit.load(args.traces or default_trace_dir())


def describe_run(fit: FitResult, gaps: GapPolicy, time_scale: float | None) -> str:
    lines = [f"sessions: {fit.describe()}",
             "gaps: tool gaps from the trace"
             + (f" capped at {gaps.tool_gap_cap_s:g} s" if gaps.tool_gap_cap_s is not None
                else " (uncapped)")
             + f", human gaps capped at {gaps.human_gap_cap_s:g} s"]
    if time_scale is not None:
        lines.append(f"time scale: {time_scale:g} (modelled seconds per wall second)")
    return "\n".join(lines)


def run_virtual(fit: FitResult, gaps: GapPolicy, args: argparse.Namespace,
                policies: list[str]) -> list[RunReport]:
    reports = []
    overrides = {"kv_pool_tokens": args.kv_pool_tokens} if args.kv_pool_tokens else {}
    for policy in policies:
        for concurrency in args.concurrency:
            cfg = VirtualConfig(
                policy=policy, preset=args.preset, replicas=args.replicas,
                engine_overrides=overrides, concurrency=concurrency, gaps=gaps,
                duration_s=args.duration_s, check_invariants=args.check_invariants,
                levers=ToolLevers(streaming_dispatch=args.streaming_dispatch,
                                  prompt_split=args.prompt_split,
                                  cache_hints=args.cache_hints,
                                  trailing_tokens=args.tool_call_trailing_tokens,
                                  parallel_calls=args.parallel_calls),
                tool_events=args.tool_events)
            total = None if args.duration_s else sum(p.total_steps for p in fit.programs)
            with tqdm(total=total, desc=f"{policy} x{concurrency}", unit="step",
                      disable=args.no_progress, file=sys.stderr) as bar:
                replay = VirtualReplay(fit.programs, cfg, fit=fit.describe(),
                                       on_step=lambda: bar.update(1))
                reports.append(replay.run())
    return reports


def run_live(fit: FitResult, gaps: GapPolicy, args: argparse.Namespace) -> list[RunReport]:
    reports = []
    for concurrency in args.concurrency:
        cfg = LiveConfig(
            target=args.target, time_scale=args.time_scale, concurrency=concurrency, gaps=gaps,
            lifecycle=args.lifecycle, thunderagent_release=args.thunderagent_release,
            message_chars_per_token=args.message_chars_per_token,
            model=args.model, duration_s=args.duration_s, engine_urls=tuple(args.engine_url),
            policy=args.policy if args.policy != "thunder" else "target",
            replicas=max(1, len(args.engine_url)))
        total = None if args.duration_s else sum(p.total_steps for p in fit.programs)
        with tqdm(total=total, desc=f"live x{concurrency}", unit="step",
                  disable=args.no_progress, file=sys.stderr) as bar:
            replay = LiveReplay(fit.programs, cfg, fit=fit.describe(),
                                on_step=lambda: bar.update(1))
            reports.append(asyncio.run(replay.run()))
    return reports


def run(args: argparse.Namespace) -> int:
    try:
        gaps = GapPolicy(args.human_gap_cap_s, args.tool_gap_cap_s)
        fit = load_fit(args)
    except (ValueError, TraceError) as exc:
        print(f"thunder-sim replay: error: {exc}", file=sys.stderr)
        return 2
    live = args.target is not None
    print(describe_run(fit, gaps, args.time_scale if live else None))
    if args.dry_run:
        return 0
    policies = [p for p in args.policy.split(",") if p]
    try:
        reports = run_live(fit, gaps, args) if live else run_virtual(fit, gaps, args, policies)
    except ValueError as exc:
        print(f"thunder-sim replay: error: {exc}", file=sys.stderr)
        return 2
    print(table(reports))
    for r in reports:
        for w in r.extra.get("warnings", ()):
            print(f"warning: {w}", file=sys.stderr)
        if r.failed_steps:
            print(f"warning: {r.failed_steps} steps failed ({r.extra.get('last_error')})",
                  file=sys.stderr)
    if args.out is not None:
        preamble = describe_run(fit, gaps, args.time_scale if live else None)
        cmd = "thunder-sim replay " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
        for path in write(reports, args.out, args.name, f"`{cmd}`\n\n{preamble}",
                          baseline="round_robin" if "round_robin" in policies else None):
            print(f"wrote {path}")
    return 0
