"""``thunder-sim demo``: the main job on an embedded default, live processes end to end.

1. Starts ``--replicas`` simulated H100 engines (``thunder-sim serve`` subprocesses, Qwen3-8B
   preset, 131,072-token context with YaRN, a KV pool shrunk to ``--kv-pool-tokens`` so a
   handful of trimmed sessions oversubscribe it the way full sessions oversubscribe a full
   pool) and the scheduler service (``thunder-scheduler serve`` with its default policy), all
   at ``--time-scale``.
2. Replays a seeded sample of the shared sessions through the scheduler (progress bar).
3. Restarts the fleet and replays the same sample through the engine-only baseline (the
   scheduler with ``--policy round_robin``: requests spread round-robin, no program awareness).
4. Prints both rows and the ratios.

Defaults (sample size, trimmed session length, gap caps, pool, time scale) are chosen to finish
in under 3 minutes on 2 cores and are printed with the results. ``--virtual`` runs the same
comparison in virtual mode (no processes) for machines where that is all that is wanted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from thunder_sim.replay.cli import add_fit_arguments, describe_run, load_fit
from thunder_sim.replay.fit import FitResult
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import ratios, table
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

HELP = "Start simulated H100 engines and the scheduler, replay sampled sessions, compare."

_SIM_READY = re.compile(r"thunder-sim ready: (http://\S+)")
_SCHED_READY = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_fit_arguments(p)
    p.set_defaults(sessions=8, seed=7, max_steps=12, tool_gap_cap_s=30.0)
    g = p.add_argument_group("demo")
    g.add_argument("--replicas", type=int, default=2)
    g.add_argument("--concurrency", type=int, default=8)
    g.add_argument("--kv-pool-tokens", type=int, default=120_000,
                   help="KV pool of each simulated engine (default 120000)")
    g.add_argument("--time-scale", type=float, default=20.0)
    g.add_argument("--policy", default=None,
                   help="scheduler policy to compare (default: the service's default)")
    g.add_argument("--baseline", default="round_robin")
    g.add_argument("--virtual", action="store_true", help="virtual mode, no processes")
    g.add_argument("--no-progress", action="store_true")


class _Proc:
    def __init__(self, argv: list[str], ready: re.Pattern[str], log_dir: Path, name: str,
                 stream: str) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        out = self.log.open("w")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE if stream == "stdout" else out,
            stderr=subprocess.PIPE if stream == "stderr" else out, text=True,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("THUNDER_")},
                 "PYTHONUNBUFFERED": "1"})
        out.close()
        self._pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        self._ready = ready
        self.url = ""

    def wait_ready(self, deadline: float) -> str:
        assert self._pipe is not None
        lines = []
        while time.monotonic() < deadline:
            line = self._pipe.readline()
            if not line:
                break
            lines.append(line)
            if m := self._ready.search(line):
                self.url = m.group(1)
                return self.url
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{''.join(lines)[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._pipe is not None:
            self._pipe.close()


def _wait_health(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer /health")


def _fleet(args: argparse.Namespace, policy: str | None, logs: Path, stack: ExitStack
           ) -> tuple[str, list[str]]:
    deadline = time.monotonic() + START_TIMEOUT_S
    sims = []
    for i in range(args.replicas):
        sim = _Proc([sys.executable, "-m", "thunder_sim", "serve", "--host", "127.0.0.1",
                     "--port", "0", "--preset", "h100-qwen3-8b", "--time-scale",
                     str(args.time_scale), "--context-length", str(args.context_tokens),
                     "--max-total-tokens", str(args.kv_pool_tokens)],
                    _SIM_READY, logs, f"sim-{policy}-{i}", "stdout")
        stack.callback(sim.stop)
        sims.append(sim)
    urls = [s.wait_ready(deadline) for s in sims]
    argv = [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1",
            "--port", "0", "--time-scale", str(args.time_scale)]
    for i, url in enumerate(urls):
        argv += ["--backend", f"engine-{i}@sglang={url}"]
    if policy is not None:
        argv += ["--policy", policy]
    sched = _Proc(argv, _SCHED_READY, logs, f"scheduler-{policy}", "stderr")
    stack.callback(sched.stop)
    url = sched.wait_ready(deadline)
    _wait_health(url, deadline)
    return url, urls


def _live(args: argparse.Namespace, fit: FitResult, gaps: GapPolicy, policy: str | None,
          label: str) -> RunReport:
    with tempfile.TemporaryDirectory(prefix="thunder-demo-") as tmp, ExitStack() as stack:
        url, engines = _fleet(args, policy, Path(tmp), stack)
        cfg = LiveConfig(target=url, time_scale=args.time_scale, concurrency=args.concurrency,
                         gaps=gaps, engine_urls=tuple(engines), policy=label,
                         replicas=args.replicas, model="Qwen/Qwen3-8B")
        total = sum(p.total_steps for p in fit.programs)
        with tqdm(total=total, desc=label, unit="step", disable=args.no_progress,
                  file=sys.stderr) as bar:
            return asyncio.run(LiveReplay(fit.programs, cfg, fit=fit.describe(),
                                          on_step=lambda: bar.update(1)).run())


def _virtual(args: argparse.Namespace, fit: FitResult, gaps: GapPolicy, policy: str,
             label: str) -> RunReport:
    cfg = VirtualConfig(policy=policy, replicas=args.replicas, concurrency=args.concurrency,
                        gaps=gaps, engine_overrides={"kv_pool_tokens": args.kv_pool_tokens},
                        label=label)
    total = sum(p.total_steps for p in fit.programs)
    with tqdm(total=total, desc=label, unit="step", disable=args.no_progress,
              file=sys.stderr) as bar:
        return VirtualReplay(fit.programs, cfg, fit=fit.describe(),
                             on_step=lambda: bar.update(1)).run()


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        gaps = GapPolicy(args.human_gap_cap_s, args.tool_gap_cap_s)
        fit = load_fit(args)
    except ValueError as exc:
        print(f"thunder-sim demo: error: {exc}", file=sys.stderr)
        return 2
    print(describe_run(fit, gaps, None if args.virtual else args.time_scale))
    print(f"fleet: {args.replicas} simulated H100 engines (Qwen3-8B, KV pool "
          f"{args.kv_pool_tokens:,} tokens each), {args.concurrency} concurrent programs, "
          f"{'virtual mode' if args.virtual else 'live processes'}")
    policy_label = args.policy or "scheduler default"
    runs: list[RunReport] = []
    try:
        for policy, label in ((args.policy, policy_label), (args.baseline, args.baseline)):
            if args.virtual:
                runs.append(_virtual(args, fit, gaps, policy or "thunder", label))
            else:
                runs.append(_live(args, fit, gaps, policy, label))
    except (RuntimeError, ValueError) as exc:
        print(f"thunder-sim demo: error: {exc}", file=sys.stderr)
        return 1
    ours, base = runs
    print(table(runs))
    print(ratios(runs, args.baseline) or "")
    if base.steps_per_min:
        print(f"\n{policy_label}: {ours.steps_per_min:.1f} steps/min, hit rate "
              f"{ours.hit_rate:.3f}; engine-only ({args.baseline}): {base.steps_per_min:.1f} "
              f"steps/min, hit rate {base.hit_rate:.3f}; ratio "
              f"{ours.steps_per_min / base.steps_per_min:.2f}x")
    for r in runs:
        if r.failed_steps:
            print(f"warning: {r.label}: {r.failed_steps} failed steps "
                  f"({r.extra.get('last_error')})", file=sys.stderr)
        for w in r.extra.get("warnings", ()):
            print(f"warning: {r.label}: {w}", file=sys.stderr)
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thunder-sim demo", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
