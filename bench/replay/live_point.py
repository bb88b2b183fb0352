"""One live-mode point next to the same point in virtual mode (live and virtual must agree).

Live: ``--replicas`` real ``thunder-sim serve`` processes (h100-qwen3-8b) and one real
``thunder-scheduler serve`` process in front of them (SGLang backends, ``--policy``: any
registered policy), all on loopback at ``--time-scale``; the replay's aiohttp client drives
programs through the scheduler and scrapes the scheduler's and the engines' ``/metrics``.
Virtual: the same sessions, policy, fleet and run length on the virtual clock. ``--workload``
is ``long`` or ``short`` (``workloads.py``; its gaps and run length unless overridden).
Writes ``bench/results/replay/live-vs-virtual-<workload>-<policy>.{md,json}``, with both
runs' recompute ledgers side by side: the engines' own ledger over every admission, the
virtual one folded to what an engine knows alone (``engine_only``).

    .venv/bin/python bench/replay/live_point.py [--workload long] [--multiple 3] \\
        [--time-scale 10] [--duration-s 900] [--replicas 2] [--policy thunder] [--hicache]

``--hicache``: every engine runs SGLang's HiCache (``--enable-hierarchical-cache``, host pool
2x the device pool), live and virtual; the file then also says where the scheduler put paused
KV (``thunder_paused_kv_total{place}``), how many warm-ups it sent and how many tokens the
engines loaded back from host (``sglang:load_back_tokens_total``), and gets ``-hicache`` in
its name.

Every process is started and stopped by ``thunder_core.launcher`` (SIGTERM, then SIGKILL
after 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from compare import OUT, fitting_programs, load_avg
from workloads import WORKLOADS, workload

from thunder_core.launcher import ChildProcess, stop_all
from thunder_scheduler.backends._prometheus import Sample, parse_samples, sum_samples
from thunder_sim.costmodel.presets import get_preset
from thunder_sim.engine.ledger import MissCause
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import CAUSE_TITLES, write
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

SIM_READY = re.compile(r"thunder-sim ready: (http://\S+)")
SCHED_READY = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 60.0


def _has_model(body: bytes) -> bool:
    """``/v1/models`` lists a model: the scheduler prints its address once the socket is bound,
    before it accepts connections and before its backends are polled."""
    return bool(json.loads(body).get("data"))


ENGINE_ONLY = {
    MissCause.FIRST_SIGHT: MissCause.FIRST_SIGHT, MissCause.MOVED: MissCause.FIRST_SIGHT,
    MissCause.EVICTED_ACTING: MissCause.EVICTED_AWAY,
    MissCause.EVICTED_PAUSED: MissCause.EVICTED_AWAY,
    MissCause.FORCED_RESTORE: MissCause.EVICTED_AWAY, MissCause.OWNER_GONE: MissCause.EVICTED_AWAY,
    MissCause.EVICTED_AWAY: MissCause.EVICTED_AWAY,
    MissCause.OVER_ADMISSION: MissCause.OVER_ADMISSION, MissCause.RETRACTION: MissCause.RETRACTION,
}
"""A virtual cause as one engine alone would name it (approximate for ``forced_restore``:
an evicted block whose owner was active would be ``over_admission`` there)."""


def engine_only(misses: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for cause, n in misses.items():
        key = ENGINE_ONLY.get(MissCause(cause), MissCause.EVICTED_AWAY).value
        out[key] = out.get(key, 0) + n
    return out


def ledger_side_by_side(live: RunReport, virtual: RunReport) -> str:
    """Both runs' engine ledgers (every admission) as % of the run's prompt tokens."""
    a = live.extra.get("engine_miss_tokens") or {}
    b = engine_only(virtual.extra.get("engine_miss_tokens") or {})
    causes = [c for c in ("first_sight", "evicted_away", "over_admission", "retraction")
              if a.get(c) or b.get(c)]
    if not causes:
        return "No recompute ledger (engines without thunder_sim_prompt_miss_tokens_total)."
    rows = ["| mode | " + " | ".join(CAUSE_TITLES.get(c, c) for c in causes)
            + " | total missed |", "|---|" + "---|" * (len(causes) + 1)]
    for r, m in ((live, a), (virtual, b)):
        p = r.prompt_tokens or 1
        rows.append(f"| {r.mode} | " + " | ".join(f"{100 * m.get(c, 0) / p:.1f}%"
                                                  for c in causes)
                    + f" | {sum(m.values()):,} |")
    return ("Engine recompute ledger, every admission (prewarms and retracted ones included), "
            "% of completed steps' prompt tokens, causes as one engine alone names them "
            "(virtual folded: moved -> first sight; acting, paused, forced restore -> evicted "
            "away):\n\n" + "\n".join(rows))


def start_engines(n: int, time_scale: float, log_dir: Path, procs: list[ChildProcess],
                  extra_args: Sequence[str] = ()) -> list[str]:
    """``n`` simulated H100 / Qwen3-8B engines on loopback; each joins ``procs`` as it starts
    (so the caller stops every one that did); returns their URLs."""
    urls = []
    for i in range(n):
        proc = ChildProcess(
            [sys.executable, "-m", "thunder_sim", "serve", "--preset", "h100-qwen3-8b",
             "--host", "127.0.0.1", "--port", "0", "--time-scale", str(time_scale),
             "--context-length", "131072", *extra_args],
            name=f"sim-{i}", ready=SIM_READY, log=log_dir / f"sim-{i}.log")
        procs.append(proc)
        urls.append(proc.wait_ready(START_TIMEOUT_S))
    return urls


def start_scheduler(policy: str, urls: Sequence[str], time_scale: float, log_dir: Path,
                    procs: list[ChildProcess], log_level: str = "warning",
                    extra_args: Sequence[str] = ()) -> str:
    """``thunder-scheduler serve --policy`` before ``urls`` (SGLang backends), with
    ``extra_args`` (more ``serve`` flags); its URL once it lists a model."""
    backends = [a for i, u in enumerate(urls) for a in ("--backend", f"engine-{i}@sglang={u}")]
    proc = ChildProcess(
        [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1",
         "--port", "0", "--policy", policy, "--time-scale", str(time_scale),
         "--log-level", log_level, *backends, *extra_args],
        name="scheduler", ready=SCHED_READY, log=log_dir / f"scheduler-{policy}.log")
    procs.append(proc)
    return proc.wait_ready(START_TIMEOUT_S, health="/v1/models", accept=_has_model)


def host_tier_counts(target: str, engine_urls: list[str]) -> str:
    """The live run's host tier, from the scheduler's and the engines' ``/metrics``."""

    def samples(url: str) -> list[Sample]:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
            return parse_samples(url, resp.read().decode())

    scheduler = samples(target)
    places = {s.labels.get("place", "?"): int(s.value) for s in scheduler
              if s.name == "thunder_paused_kv_total"}
    prewarms = int(sum_samples(scheduler, "thunder_prewarms_total") or 0)
    host = [int(s.value) for s in scheduler
            if s.name == "thunder_backend_host_kv_capacity_tokens"]
    loaded = sum(int(sum_samples(samples(u), "sglang:load_back_tokens_total") or 0)
                 for u in engine_urls)
    return (f"\nHost tier, live: the scheduler read host pools of "
            f"{', '.join(f'{h:,}' for h in host)} tokens from the engines' `/server_info`; "
            f"pauses by where the KV went "
            f"{places or 'none'}; warm-ups sent {prewarms:,}; tokens the engines loaded back "
            f"from host {loaded:,}.\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="long", choices=WORKLOADS)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--multiple", type=int, default=3)
    ap.add_argument("--policy", default="thunder")
    ap.add_argument("--time-scale", type=float, default=10.0)
    ap.add_argument("--duration-s", type=float, default=None,
                    help="modelled seconds (default: the workload's)")
    ap.add_argument("--sessions", type=int, default=None,
                    help="sessions drawn (default: the workload's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tool-gap-cap-s", type=float, default=None,
                    help="default: the workload's")
    ap.add_argument("--logs", type=Path, default=None,
                    help="keep the engines' and the scheduler's logs and the final program "
                         "list (programs.json) in this folder (default: a temp dir, deleted)")
    ap.add_argument("--scheduler-log-level", default="warning")
    ap.add_argument("--hicache", action="store_true",
                    help="engines with SGLang's HiCache host tier (live and virtual)")
    args = ap.parse_args()
    hicache_args = ["--enable-hierarchical-cache"] if args.hicache else []
    wl = workload(args.workload, args.seed, args.sessions)
    fit = wl.load()
    gaps = wl.gaps if args.tool_gap_cap_s is None else GapPolicy(
        tool_gap_cap_s=args.tool_gap_cap_s)
    duration_s = args.duration_s or wl.duration_s
    load_before = load_avg()
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    concurrency = fitting_programs(args.replicas, pool, mean_peak) * args.multiple
    procs: list[ChildProcess] = []
    tmp = tempfile.TemporaryDirectory(prefix="live-point-") if args.logs is None else None
    log_dir = Path(tmp.name) if tmp is not None else args.logs
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        urls = start_engines(args.replicas, args.time_scale, log_dir, procs, hicache_args)
        target = start_scheduler(args.policy, urls, args.time_scale, log_dir, procs,
                                 args.scheduler_log_level)
        t0 = time.perf_counter()
        live = asyncio.run(LiveReplay(fit.programs, LiveConfig(
            target=target, time_scale=args.time_scale, concurrency=concurrency, gaps=gaps,
            duration_s=duration_s, engine_urls=tuple(urls), policy=args.policy,
            replicas=args.replicas), fit=fit.describe()).run())
        live_wall = time.perf_counter() - t0
        tiers = host_tier_counts(target, urls) if args.hicache else ""
        if tmp is None:
            with urllib.request.urlopen(f"{target}/v1/programs", timeout=30) as resp:
                (log_dir / "programs.json").write_bytes(resp.read())
    finally:
        stop_all(procs)
        if tmp is not None:
            tmp.cleanup()
    virtual = VirtualReplay(fit.programs, VirtualConfig(
        policy=args.policy, replicas=args.replicas, concurrency=concurrency, gaps=gaps,
        duration_s=duration_s,
        engine_overrides={"enable_hierarchical_cache": True} if args.hicache else {},
    ), fit=fit.describe()).run()
    pre = (f"Command: `.venv/bin/python bench/replay/live_point.py {shlex.join(sys.argv[1:])}`; "
           f"live run {live_wall:.0f} s wall at time scale {args.time_scale:g}; load average "
           f"{load_before} before, {load_avg()} after\n\n"
           f"Workload `{wl.name}`: {wl.rule} (`bench/replay/workloads.py`).\n\n"
           f"{describe_run(fit, gaps, args.time_scale)}\n\n"
           f"{concurrency} programs ({args.multiple}x the {concurrency // args.multiple} that "
           f"fit {args.replicas} pools), {duration_s:g} modelled s, seed {args.seed}. "
           f"Live: {args.replicas} `thunder-sim serve` + `thunder-scheduler serve --policy "
           f"{args.policy}`; virtual: the same policy code on the virtual clock.\n\n"
           f"Live warnings: {live.extra.get('warnings') or 'none'}; failed live steps: "
           f"{live.failed_steps} ({live.extra.get('last_error') or '-'})")
    agree = (f"Live / virtual: steps/min {live.steps_per_min / virtual.steps_per_min:.2f}, "
             f"hit rate {live.hit_rate / virtual.hit_rate:.2f}"
             if virtual.steps_per_min and virtual.hit_rate else "")
    name = f"live-vs-virtual-{wl.name}-{args.policy}{'-hicache' if args.hicache else ''}"
    paths = write([live, virtual], OUT, name, pre)
    md = paths[0]
    md.write_text(md.read_text() + "\n" + agree + "\n\n" + ledger_side_by_side(live, virtual)
                  + "\n" + tiers)
    for path in paths:
        print(f"wrote {path}")
    for r in (live, virtual):
        print(f"{r.mode}: {r.steps_per_min:.1f} steps/min hit {r.hit_rate:.3f} pauses "
              f"{r.pauses} extra {r.extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
