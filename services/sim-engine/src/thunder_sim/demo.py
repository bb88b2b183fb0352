"""``thunder-sim demo``: the main job on an embedded default, live processes end to end.

1. Loads a seeded sample of the shared sessions (``--sessions``, ``--seed``), kept whole
   (no trimming unless ``--max-steps``) and filtered to Qwen3-8B's 131,072-token YaRN window.
2. Starts ``--replicas`` simulated H100 engines (``thunder-sim serve --preset h100-qwen3-8b``,
   the preset's own KV pool unless ``--kv-pool-tokens``) and the scheduler service
   (``thunder-scheduler serve`` with its default policy), all at ``--time-scale``.
3. Runs ``--concurrency`` programs through the scheduler for ``--duration-s`` modelled seconds
   (a closed loop: a program that ends is replaced by the next session of the sample, replayed
   again with fresh block keys once the sample is used up), with a progress bar in modelled
   seconds.
4. Restarts the fleet (cold caches) and runs the same sample for the same time through the
   engine-only baseline: the scheduler with ``--policy round_robin`` (requests spread
   round-robin over the engines, no program awareness: what users have with N engines today).
5. Prints both rows, the ratio, and any instrument warning (event-loop lag of the replay or of
   the engines, failed steps).

Why a fixed modelled duration rather than "play the sample once": with a closed loop of whole
sessions, the makespan is set by the longest session (a straggler running alone at the end),
which hides throughput; a fixed window with every slot busy measures steps per minute under
constant load, as the ThunderAgent paper does, and fixes the demo's wall time at
``duration / time scale`` per configuration plus process start-up.

Defaults (the demo timed end to end, idle and loaded, in
``bench/results/replay/instrument.md``): 48 sessions (seed 7; mean peak context 90,700
tokens); 27 concurrent programs on 2 engines with the preset's 373,059-token pools, so the
programs' peak contexts are 3.3x the fleet's KV (the ThunderAgent paper's regime: engine-only
thrashes, a program-aware scheduler pauses programs instead); tool gaps capped at 60 s (the
trace's p99 is 2,908 s: uncapped, most programs would sit in tools for the whole window);
900 modelled seconds per configuration at time scale 20, i.e. 45 s of wall time each. Within
900 s about 35 programs start, fewer than the sample, so no session is replayed twice by
default. ``--virtual`` runs the same comparison in virtual
mode (no processes, a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from thunder_core.launcher import ChildProcess, environ_without
from thunder_sim.costmodel import get_preset
from thunder_sim.engine import EngineConfig
from thunder_sim.replay.cli import add_fit_arguments, describe_run, load_fit
from thunder_sim.replay.fit import FitResult
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import table
from thunder_sim.replay.trace import TraceError
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

HELP = "Start simulated H100 engines and the scheduler, replay sampled sessions, compare."
PRESET = "h100-qwen3-8b"
MODEL = "Qwen/Qwen3-8B"

_SIM_READY = re.compile(r"thunder-sim ready: (http://\S+)")
_SCHED_READY = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 90.0          # a loaded 2-core machine imports slowly


def scheduler_default_policy() -> str:
    """The policy ``thunder-scheduler serve`` runs when none is given."""
    from thunder_scheduling.registry import DEFAULT_POLICY

    return DEFAULT_POLICY


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_fit_arguments(p)
    p.set_defaults(sessions=48, seed=7, tool_gap_cap_s=60.0)
    g = p.add_argument_group("demo")
    g.add_argument("--replicas", type=int, default=2, help="simulated engines (default 2)")
    g.add_argument("--concurrency", type=int, default=27,
                   help="concurrent programs (default 27)")
    g.add_argument("--duration-s", type=float, default=900.0,
                   help="modelled seconds per configuration (default 900)")
    g.add_argument("--kv-pool-tokens", type=int, default=None,
                   help="KV pool of each engine (default: the preset's, 373,059)")
    g.add_argument("--time-scale", type=float, default=20.0,
                   help="modelled seconds per wall second (default 20)")
    g.add_argument("--policy", default=None,
                   help="scheduler policy to compare (default: the service's default)")
    g.add_argument("--baseline", default="round_robin",
                   help="the engine-only baseline's policy (default round_robin)")
    g.add_argument("--virtual", action="store_true", help="virtual mode, no processes")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> None:
    """Reject bad flags before anything starts (ValueError names the flag)."""
    for flag in ("replicas", "concurrency"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag in ("duration_s", "time_scale"):
        value = getattr(args, flag)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
    if args.kv_pool_tokens is not None:
        try:
            EngineConfig.from_preset(PRESET, kv_pool_tokens=args.kv_pool_tokens)
        except ValueError as exc:
            raise ValueError(f"--kv-pool-tokens: {exc}") from None


def pool_tokens(args: argparse.Namespace) -> int:
    if args.kv_pool_tokens is not None:
        return int(args.kv_pool_tokens)
    return get_preset(PRESET).kv_pool_tokens


def describe_fleet(args: argparse.Namespace, fit: FitResult) -> str:
    pool = pool_tokens(args)
    peaks = [p.peak_context_tokens for p in fit.programs]
    mean_peak = sum(peaks) / len(peaks)
    largest = max(peaks)
    if largest + 1 > pool:
        raise ValueError(f"--kv-pool-tokens {pool:,} cannot hold the sample's largest step "
                         f"({largest:,} tokens); raise it or lower --context-tokens")
    load = args.concurrency * mean_peak / (args.replicas * pool)
    mode = "virtual mode (no processes)" if args.virtual else "live processes"
    return "\n".join([
        f"fleet: {args.replicas} simulated H100 engines ({PRESET}: Qwen3-8B, KV pool "
        f"{pool:,} tokens each), {mode}",
        f"load: {args.concurrency} concurrent programs for {args.duration_s:g} modelled s per "
        f"configuration (closed loop: an ended program is replaced by the next session); "
        f"mean peak context {mean_peak:,.0f} tokens, so the programs' peak contexts are "
        f"{load:.2f}x the fleet's KV",
    ])


class _Progress:
    """A bar in modelled seconds of the run, with the step count beside it."""

    def __init__(self, label: str, total_s: float, disable: bool) -> None:
        self.bar = tqdm(total=round(total_s), desc=label, unit="s", disable=disable,
                        file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} "
                        "modelled s [{elapsed}<{remaining}{postfix}]")
        self.steps = 0

    def step(self, now_s: float) -> None:
        self.steps += 1
        target = min(float(now_s), float(self.bar.total))
        self.bar.set_postfix_str(f"{self.steps} steps", refresh=False)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def close(self, end_s: float) -> None:
        if end_s > self.bar.n:
            self.bar.update(min(end_s, float(self.bar.total)) - self.bar.n)
        self.bar.close()


def _fleet(args: argparse.Namespace, policy: str, logs: Path, stack: ExitStack
           ) -> tuple[str, list[str]]:
    deadline = time.monotonic() + START_TIMEOUT_S
    env = environ_without("THUNDER_")
    sims = []
    for i in range(args.replicas):
        argv = [sys.executable, "-m", "thunder_sim", "serve", "--host", "127.0.0.1",
                "--port", "0", "--preset", PRESET, "--time-scale", str(args.time_scale),
                "--served-model-name", MODEL]
        if args.context_tokens:
            argv += ["--context-length", str(args.context_tokens)]
        if args.kv_pool_tokens is not None:
            argv += ["--max-total-tokens", str(args.kv_pool_tokens)]
        name = f"sim-{policy}-{i}"
        sim = ChildProcess(argv, name=name, ready=_SIM_READY, log=logs / f"{name}.log", env=env)
        stack.callback(sim.stop)
        sims.append(sim)
    urls = [s.wait_ready(deadline - time.monotonic()) for s in sims]
    argv = [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1",
            "--port", "0", "--time-scale", str(args.time_scale), "--policy", policy]
    for i, url in enumerate(urls):
        argv += ["--backend", f"engine-{i}@sglang={url}"]
    name = f"scheduler-{policy}"
    sched = ChildProcess(argv, name=name, ready=_SCHED_READY, log=logs / f"{name}.log", env=env)
    stack.callback(sched.stop)
    url = sched.wait_ready(deadline - time.monotonic(), health="/health")
    return url, urls


def _live(args: argparse.Namespace, fit: FitResult, gaps: GapPolicy, policy: str) -> RunReport:
    with tempfile.TemporaryDirectory(prefix="thunder-demo-") as tmp, ExitStack() as stack:
        if not args.no_progress:
            print(f"{policy}: starting {args.replicas} engines and the scheduler ...",
                  file=sys.stderr, flush=True)
        url, engines = _fleet(args, policy, Path(tmp), stack)
        cfg = LiveConfig(target=url, time_scale=args.time_scale, concurrency=args.concurrency,
                         gaps=gaps, engine_urls=tuple(engines), policy=policy, label=policy,
                         replicas=args.replicas, model=MODEL, duration_s=args.duration_s)
        progress = _Progress(policy, args.duration_s, args.no_progress)
        replay: LiveReplay | None = None

        def on_step() -> None:
            assert replay is not None
            progress.step(replay.now())

        replay = LiveReplay(fit.programs, cfg, fit=fit.describe(), on_step=on_step)
        try:
            report = asyncio.run(replay.run())
        finally:
            progress.close(args.duration_s)
        return report


def _virtual(args: argparse.Namespace, fit: FitResult, gaps: GapPolicy, policy: str
             ) -> RunReport:
    overrides = {} if args.kv_pool_tokens is None else {"kv_pool_tokens": args.kv_pool_tokens}
    cfg = VirtualConfig(policy=policy, preset=PRESET, replicas=args.replicas,
                        concurrency=args.concurrency, gaps=gaps, engine_overrides=overrides,
                        duration_s=args.duration_s, label=policy)
    progress = _Progress(policy, args.duration_s, args.no_progress)
    replay: VirtualReplay | None = None

    def on_step() -> None:
        assert replay is not None
        progress.step(replay.recorder.steps[-1].finished_s if replay.recorder.steps else 0.0)

    replay = VirtualReplay(fit.programs, cfg, fit=fit.describe(), on_step=on_step)
    try:
        return replay.run()
    finally:
        progress.close(args.duration_s)


def comparison(ours: RunReport, base: RunReport) -> str:
    """The headline: both configurations' numbers and the ratios."""
    names = [f"scheduler ({ours.policy}):", f"engine-only ({base.policy}):"]
    width = max(map(len, names))
    lines = [
        f"{names[0]:<{width}} {ours.steps_per_min:6.1f} steps/min, KV hit rate "
        f"{ours.hit_rate:.3f}, {ours.steps} steps, {ours.pauses} pauses",
        f"{names[1]:<{width}} {base.steps_per_min:6.1f} steps/min, KV hit rate "
        f"{base.hit_rate:.3f}, {base.steps} steps",
    ]
    if base.steps_per_min > 0:
        lines.append(f"ratio: {ours.steps_per_min / base.steps_per_min:.2f}x steps/min, "
                     f"hit rate {ours.hit_rate:.3f} vs {base.hit_rate:.3f} "
                     f"(ideal prefix reuse of the sessions played: {ours.ideal_hit_rate:.3f})")
    else:
        lines.append("ratio: undefined (the baseline completed no step)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        _check(args)
        gaps = GapPolicy(args.human_gap_cap_s, args.tool_gap_cap_s)
        fit = load_fit(args)
        if not fit.programs:
            raise ValueError("no session fits the context filter (--context-tokens)")
        fleet = describe_fleet(args, fit)
    except (ValueError, TraceError) as exc:
        print(f"thunder-sim demo: error: {exc}", file=sys.stderr)
        return 2
    policy = args.policy or scheduler_default_policy()
    print(describe_run(fit, gaps, None if args.virtual else args.time_scale))
    print(fleet)
    print(f"compared: the scheduler ({policy}) vs engine-only ({args.baseline}), the same "
          "sessions, each on a fresh fleet", flush=True)
    runs: list[RunReport] = []
    execute: Callable[[argparse.Namespace, FitResult, GapPolicy, str], RunReport] = (
        _virtual if args.virtual else _live)
    try:
        for name in (policy, args.baseline):
            runs.append(execute(args, fit, gaps, name))
    except (RuntimeError, ValueError) as exc:
        print(f"thunder-sim demo: error: {exc}", file=sys.stderr)
        return 1
    ours, base = runs
    print()
    print(table(runs))
    print()
    print(comparison(ours, base))
    for r in runs:
        if r.mode == "live":
            x = r.extra
            print(f"instrument ({r.label}): replay event-loop lag p99 "
                  f"{x.get('replay_loop_lag_p99_ms', 0.0):.1f} ms wall, engines lost "
                  f"{100 * x.get('engine_lost_fraction', 0.0):.1f}% of planned step time, "
                  f"{x.get('lifecycle_errors', 0)} lifecycle API errors"
                  + (f" (last: {x.get('last_error')})" if x.get("lifecycle_errors") else ""))
        if r.failed_steps:
            print(f"warning: {r.label}: {r.failed_steps} failed steps "
                  f"({r.extra.get('last_error')})", file=sys.stderr)
        for w in r.extra.get("warnings", ()):
            print(f"warning: {r.label}: {w}", file=sys.stderr)
    print(f"demo finished in {time.monotonic() - started:.0f} s wall")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thunder-sim demo", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
