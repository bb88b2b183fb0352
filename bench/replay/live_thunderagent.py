"""The real ThunderAgent proxy against thunder, live, on the same simulated engines.

Issue 16 measured thunder against ThunderAgent's own proxy (ThunderAgent-org/ThunderAgent,
``python -m ThunderAgent --router tr``) with one client for both; every other comparison in
``bench/replay`` uses our port (``policies/thunderagent.py``). This bench runs the real proxy
from a checkout you point it at (``--thunderagent-src``; it is not shipped here: MIT-licensed
code of another project, fetched with ``git clone
https://github.com/ThunderAgent-org/ThunderAgent``) and, in turn, ``thunder-scheduler serve``
with ``thunder`` and with the port, each before fresh ``thunder-sim serve`` engines, all on
loopback, and drives them with one client:

* ``plain`` (default): a client written for ThunderAgent's API, as in the issue: the program id
  in the body (``program_id``), ``POST /programs/release`` at a program's end, no tool events
  and no lifecycle calls (``LiveConfig(lifecycle="off", thunderagent_release=True)``);
* ``lifecycle``: thunder's own client for the thunder targets (programs started and ended,
  tool calls reported); the real proxy still gets the plain one (it has no such API).

Every request's user message is padded to ``--message-chars-per-token`` characters per prompt
token (4: about what English and code take): ThunderAgent estimates a request's tokens as the
length of its JSON body over a learned characters-per-token ratio, and the replay's short
placeholder message (the engines read the prompt from the trace extension) would mislead that
estimate in a way real text does not. Thunder's service takes the prompt length the extension
states (from a real body it estimates it from the messages' text), so padding changes nothing
for it.

The real proxy is started with its own defaults except for time: its scheduler tick
(``--scheduler-interval``, 5 s) is divided by the time scale, as the issue did, because it
counts wall seconds (``time.time()`` in its ``scheduler/router.py``); so is its 1,800 s wait
bound in effect multiplied by the scale (wall seconds too: never reached in these runs, nor at
scale 1 within a 900 s run). It reads each engine's capacity from ``/get_server_info``
(``max_total_num_tokens``), which the simulated engines serve as SGLang does.

    .venv/bin/python bench/replay/live_thunderagent.py --thunderagent-src PATH \\
        [--workload long] [--multiple 3] [--replicas 2] [--time-scale 10] \\
        [--duration-s 900] [--seed 1] [--client plain] [--targets real,thunder,thunderagent]

Writes ``bench/results/replay/live-real-thunderagent-<workload>-<multiple>x-<duration>s
[-lifecycle].{md,json}`` (every target's row, its ratio to the real proxy, and the port's ratio
to it: how faithful the port is).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare import OUT, fitting_programs, load_avg
from live_point import START_TIMEOUT_S, _has_model, start_engines, start_scheduler
from workloads import WORKLOADS, Workload, workload

from thunder_core.launcher import ChildProcess, free_port, stop_all
from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.fit import FitResult
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.report import write

TARGETS = ("real", "thunder", "thunderagent", "round_robin")
"""``real``: ThunderAgent's proxy; the others: ``thunder-scheduler serve --policy NAME``."""
TA_TICK_S = 5.0
"""ThunderAgent's ``--scheduler-interval`` default (its ``__main__.py``), in wall seconds."""


def ta_revision(src: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"


def start_target(target: str, urls: list[str], args: argparse.Namespace, log_dir: Path,
                 procs: list[ChildProcess]) -> str:
    if target == "real":
        port = free_port()
        tick = TA_TICK_S / args.time_scale
        proc = ChildProcess(
            [sys.executable, "-m", "ThunderAgent", "--host", "127.0.0.1", "--port", str(port),
             "--backends", ",".join(urls), "--router", "tr", "--backend-type", "sglang",
             "--scheduler-interval", f"{tick:g}", "--log-level", "warning"],
            name="thunderagent", ready=None, url=f"http://127.0.0.1:{port}",
            log=log_dir / "thunderagent.log",
            env={**os.environ, "PYTHONPATH": str(args.thunderagent_src)})
        procs.append(proc)
        return proc.wait_ready(START_TIMEOUT_S, health="/v1/models", accept=_has_model)
    extra = shlex.split(args.thunder_args) if target == "thunder" else []
    return start_scheduler(target, urls, args.time_scale, log_dir, procs, extra_args=extra)


def run_target(target: str, wl: Workload, fit: FitResult, args: argparse.Namespace,
               concurrency: int, log_dir: Path) -> RunReport:
    procs: list[ChildProcess] = []
    try:
        urls = start_engines(args.replicas, args.time_scale, log_dir, procs)
        url = start_target(target, urls, args, log_dir, procs)
        plain = target == "real" or args.client == "plain"
        label = "ThunderAgent (real proxy)" if target == "real" else f"{target} (service)"
        if target == "thunder" and args.thunder_args:
            label = f"thunder (service, {args.thunder_args})"
        return asyncio.run(LiveReplay(fit.programs, LiveConfig(
            target=url, time_scale=args.time_scale, concurrency=concurrency,
            gaps=wl.gaps, duration_s=args.duration_s, engine_urls=tuple(urls),
            lifecycle="off" if plain else "on", thunderagent_release=plain,
            message_chars_per_token=args.message_chars_per_token,
            policy="thunderagent-real" if target == "real" else target,
            replicas=args.replicas, label=label), fit=fit.describe()).run())
    finally:
        stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thunderagent-src", type=Path, required=True,
                    help="a checkout of ThunderAgent-org/ThunderAgent (the folder holding the "
                         "ThunderAgent package)")
    ap.add_argument("--workload", default="long", choices=WORKLOADS)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--multiple", type=int, default=3)
    ap.add_argument("--time-scale", type=float, default=10.0)
    ap.add_argument("--duration-s", type=float, default=900.0, help="modelled seconds")
    ap.add_argument("--sessions", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--client", choices=("plain", "lifecycle"), default="plain")
    ap.add_argument("--message-chars-per-token", type=float, default=4.0,
                    help="pad each request's message to this many characters per prompt token "
                         "(ThunderAgent estimates tokens from the body's size; 0: a short "
                         "placeholder, whose size says nothing of the prompt's)")
    ap.add_argument("--targets", default="real,thunder,thunderagent",
                    help=f"comma list of {', '.join(TARGETS)}")
    ap.add_argument("--thunder-args", default="",
                    help="more `thunder-scheduler serve` flags for the thunder target, one "
                         "string (e.g. '--max-paused-s 1800 --promote-after-s 0')")
    ap.add_argument("--name", default=None,
                    help="results file name (default: live-real-thunderagent-WORKLOAD-Mx-Ds)")
    ap.add_argument("--logs", type=Path, default=None,
                    help="keep every process's log in this folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not (args.thunderagent_src / "ThunderAgent" / "__main__.py").is_file():
        ap.error(f"--thunderagent-src: no ThunderAgent/__main__.py under "
                 f"{args.thunderagent_src} (clone ThunderAgent-org/ThunderAgent there)")
    targets = args.targets.split(",")
    if unknown := [t for t in targets if t not in TARGETS]:
        ap.error(f"--targets: unknown {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if args.time_scale <= 0 or args.duration_s <= 0:
        ap.error("--time-scale and --duration-s must be positive")
    if args.thunder_args and "thunder" not in targets:
        ap.error("--thunder-args: applies to the thunder target, which --targets leaves out")
    if args.thunder_args:
        checked = subprocess.run(
            [sys.executable, "-m", "thunder_scheduler", "check-config", "--policy", "thunder",
             *shlex.split(args.thunder_args)], capture_output=True, text=True)
        if checked.returncode != 0:
            ap.error(f"--thunder-args: {checked.stderr.strip() or checked.stdout.strip()}")
    wl = workload(args.workload, args.seed, args.sessions)
    fit = wl.load()
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    concurrency = fitting_programs(args.replicas, pool, mean_peak) * args.multiple
    tmp = tempfile.TemporaryDirectory(prefix="live-ta-") if args.logs is None else None
    log_dir = Path(tmp.name) if tmp is not None else args.logs
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = load_avg()
    started = time.perf_counter()
    reports: list[RunReport] = []
    walls: dict[str, float] = {}
    try:
        for target in targets:
            t0 = time.perf_counter()
            r = run_target(target, wl, fit, args, concurrency, log_dir)
            walls[target] = time.perf_counter() - t0
            reports.append(r)
            print(f"{target}: {r.steps_per_min:.1f} steps/min hit {r.hit_rate:.3f} "
                  f"p99 {r.step_latency_p99_s:.0f} s failed {r.failed_steps} "
                  f"({walls[target]:.0f} s)", file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    src = args.thunderagent_src.resolve()
    pre = (f"Command: `.venv/bin/python bench/replay/live_thunderagent.py "
           f"{shlex.join(sys.argv[1:])}` ({time.perf_counter() - started:.0f} s wall; load "
           f"average {load_before} before, {load_avg()} after)\n\n"
           f"ThunderAgent: `python -m ThunderAgent --router tr --backend-type sglang "
           f"--scheduler-interval {TA_TICK_S / args.time_scale:g}` (its 5 s tick / time scale "
           f"{args.time_scale:g}, other flags its defaults) from {src.name} at "
           f"{ta_revision(src)}.\n\n"
           f"Workload `{wl.name}`: {wl.rule} (`bench/replay/workloads.py`).\n\n"
           f"{describe_run(fit, wl.gaps, args.time_scale)}\n\n"
           f"{concurrency} programs ({args.multiple}x the {concurrency // args.multiple} that "
           f"fit {args.replicas} pools), {args.duration_s:g} modelled s, seed {args.seed}, "
           f"fresh engines per target; messages padded to "
           f"{args.message_chars_per_token:g} characters per prompt token. Client: "
           + ("ThunderAgent's API for every target (program id in the body, "
              "`/programs/release` at the end, no tool events)."
              if args.client == "plain" else
              "thunder's lifecycle API for the thunder targets, ThunderAgent's for the "
              "real proxy.")
           + "\n\nFailed live steps: "
           + ", ".join(f"{r.label} {r.failed_steps} ({r.extra.get('last_error') or '-'})"
                       for r in reports)
           + "\n\nWarnings: "
           + ("; ".join(f"{r.label}: {r.extra['warnings']}" for r in reports
                        if r.extra.get("warnings")) or "none"))
    real = next((r for r in reports if r.policy == "thunderagent-real"), None)
    lines = []
    if real is not None and real.steps_per_min:
        for r in reports:
            if r is not real:
                lines.append(f"- {r.label} / ThunderAgent (real proxy): steps/min "
                             f"{r.steps_per_min / real.steps_per_min:.2f}x, hit rate "
                             f"{r.hit_rate:.3f} vs {real.hit_rate:.3f}, step p99 "
                             f"{r.step_latency_p99_s:.0f} s vs {real.step_latency_p99_s:.0f} s")
    suffix = "" if args.client == "plain" else "-lifecycle"
    name = args.name or (f"live-real-thunderagent-{wl.name}-{args.multiple}x-"
                         f"{args.duration_s:g}s{suffix}")
    paths = write(reports, args.out, name, pre)
    md = paths[0]
    md.write_text(md.read_text() + "\n" + "\n".join(lines) + "\n")
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
