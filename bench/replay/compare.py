"""Policy comparison on the simulated H100 / Qwen3-8B fleet, virtual mode.

Every registered policy (engine-only ``round_robin``, the SGLang router's ``cache_aware``, the
program-aware ones, and any comparison policy in the registry) on the same sessions and seed,
at 3x and 4x the number of programs whose contexts fit the KV pools (``--multiples``), with 2
and 4 replicas, on two workloads (``workloads.py``: ``long`` Claude Code sessions, ``short``
many short programs). Writes ``bench/results/replay/compare-<workload>-<replicas>r.{md,json,
png}`` and ``...-ledger.png`` (the recompute ledger: missed prompt tokens by cause, stacked
per policy), and checks the targets for ``--target-policy`` (appended to the Markdown).

    .venv/bin/python bench/replay/compare.py [--workload long,short] [--replicas 2,4] \\
        [--multiples 3,4] [--policies all] [--seed 1]

**Programs that fit the KV pools** = floor(total KV pool tokens / mean peak context of the
sampled sessions), peak context = a session's largest prompt + output (subagents included):
the number of average sessions whose whole KV, at its largest, fits the pools at once. At 1x,
every program keeps its KV for its whole life; above it, programs must share. Sessions are
recycled (fresh block keys) so every concurrency slot stays busy for the whole run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from workloads import WORKLOADS, workload

from thunder_scheduling.registry import policy_names
from thunder_sim.costmodel.presets import get_preset
from thunder_sim.engine import EngineConfig
from thunder_sim.engine.ledger import MissCause
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.report import CAUSE_TITLES, write
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

OUT = Path(__file__).resolve().parents[1] / "results" / "replay"
MULTIPLES = (3, 4)
SCHEDULER_MADE = tuple(c.value for c in MissCause if c is not MissCause.FIRST_SIGHT)


def fitting_programs(replicas: int, pool_tokens: int, mean_peak_tokens: float) -> int:
    return max(1, math.floor(replicas * pool_tokens / mean_peak_tokens))


def hicache_line(hc: str) -> str:
    """What the engines' host tier is, when HiCache is on (empty when off)."""
    if hc != "on":
        return ""
    cfg = EngineConfig.from_preset("h100-qwen3-8b", enable_hierarchical_cache=True)
    rate = cfg.host_device_bytes_per_s / cfg.kv_bytes_per_token
    return (f"HiCache on every engine (`--enable-hierarchical-cache`, ratio "
            f"{cfg.hicache_ratio:g}, {cfg.hicache_write_policy}): host pool "
            f"{cfg.host_pool_tokens:,} tokens per engine, load-back "
            f"{cfg.host_device_bytes_per_s / 1e9:g} GB/s = {rate:,.0f} tokens/s; the scheduler "
            f"gets both on `BackendUpdated`.\n\n")


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def largest_causes(r: RunReport, n: int = 3) -> str:
    """The ``n`` largest causes of lost hit rate beyond first sight, in points of prompt."""
    if not r.miss_tokens or not r.prompt_tokens:
        return "no ledger"
    top = sorted(((r.miss_tokens.get(c, 0), c) for c in SCHEDULER_MADE), reverse=True)[:n]
    return ", ".join(f"{CAUSE_TITLES.get(c, c)} {100 * v / r.prompt_tokens:.1f}%"
                     for v, c in top if v)


def targets(reports: list[RunReport], fits: int, policy: str, anchor: str) -> str:
    """The targets for ``policy`` against ``anchor`` and round-robin, each with the measured
    value and MET / MISSED (a target whose reference policy did not run is skipped)."""
    by = {(r.policy, r.concurrency): r for r in reports}
    own = sorted((r for r in reports if r.policy == policy), key=lambda r: r.concurrency)
    if not own:
        return ""
    lines = [f"Targets for `{policy}` (measured in this run):", ""]

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    for r in own:
        mult = f"{r.concurrency / fits:g}x ({r.concurrency} programs)"
        ref = by.get((anchor, r.concurrency))
        if ref is not None and ref.steps_per_min:
            x = r.steps_per_min / ref.steps_per_min
            lines.append(f"- {mult}: {x:.2f}x `{anchor}` steps/min (target >= 1.3x): "
                         f"{verdict(x >= 1.3)}; step p99 {r.step_latency_p99_s:.1f} s vs "
                         f"{ref.step_latency_p99_s:.1f} s (target <=): "
                         f"{verdict(r.step_latency_p99_s <= ref.step_latency_p99_s)}")
        rr = by.get(("round_robin", r.concurrency))
        if rr is not None and rr.steps_per_min and r.concurrency == 3 * fits:
            x = r.steps_per_min / rr.steps_per_min
            lines.append(f"- {mult}: {x:.2f}x round-robin steps/min (target >= 2x): "
                         f"{verdict(x >= 2)}")
        share = r.hit_rate / r.ideal_hit_rate if r.ideal_hit_rate else math.nan
        goal = " (target >= 90% at 3x)" if r.concurrency == 3 * fits else ""
        lines.append(f"- {mult}: hit rate {r.hit_rate:.3f} vs ideal {r.ideal_hit_rate:.3f} = "
                     f"{share:.0%} of ideal{goal}"
                     + (f": {verdict(share >= 0.9)}" if goal else "")
                     + f"; largest causes beyond first sight: {largest_causes(r)}")
        share_paused = r.max_paused_share
        lines.append(f"- {mult}: most paused program spent {share_paused:.0%} of its life "
                     f"paused (target <= 50%): {verdict(share_paused <= 0.5)}; longest "
                     f"single pause {r.max_paused_s:.0f} s")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="long,short",
                    help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--replicas", default="2,4")
    ap.add_argument("--policies", default="all", help="comma list, or all registered ones")
    ap.add_argument("--sessions", type=int, default=None,
                    help="sessions drawn (default: the workload's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=None,
                    help="modelled seconds per run (default: the workload's)")
    ap.add_argument("--multiples", default=",".join(map(str, MULTIPLES)))
    ap.add_argument("--knobs", default="{}",
                    help='JSON policy -> knobs, e.g. {"thunder": {"acting_half_life_s": 30}}')
    ap.add_argument("--target-policy", default="thunder")
    ap.add_argument("--anchor", default="thunderagent",
                    help="the policy the target ratio is measured against")
    ap.add_argument("--name", default="compare")
    ap.add_argument("--hicache", default="off",
                    help="comma list of off / on: engines without / with SGLang's HiCache host "
                         "tier (--enable-hierarchical-cache, host pool = 2x the device pool)")
    ap.add_argument("--no-tool-events", dest="tool_events", action="store_false",
                    help="do not report tool calls to the core: a plain client that only sends "
                         "requests (and ends its programs), as one written for ThunderAgent does")
    ap.add_argument("--out", default=str(OUT), help="directory of the results files")
    args = ap.parse_args()
    knobs: dict[str, dict[str, Any]] = json.loads(args.knobs)
    policies = policy_names() if args.policies == "all" else args.policies.split(",")
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    multiples = [int(m) for m in args.multiples.split(",")]
    hicache = args.hicache.split(",")
    if any(h not in ("off", "on") for h in hicache):
        ap.error(f"--hicache takes off, on or off,on; got {args.hicache!r}")
    out = Path(args.out)
    for wl_name in args.workload.split(","):
        wl = workload(wl_name, args.seed, args.sessions)
        fit = wl.load()
        duration_s = args.duration_s or wl.duration_s
        mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
        for replicas, hc in ((int(r), h) for r in args.replicas.split(",") for h in hicache):
            overrides = {"enable_hierarchical_cache": True} if hc == "on" else {}
            fits = fitting_programs(replicas, pool, mean_peak)
            reports = []
            load_before = load_avg()
            started = time.perf_counter()
            for policy in policies:
                for mult in multiples:
                    cfg = VirtualConfig(policy=policy, policy_knobs=knobs.get(policy, {}),
                                        replicas=replicas, concurrency=fits * mult,
                                        gaps=wl.gaps, duration_s=duration_s,
                                        engine_overrides=overrides,
                                        tool_events=args.tool_events)
                    t0 = time.perf_counter()
                    r = VirtualReplay(fit.programs, cfg, fit=fit.describe()).run()
                    reports.append(r)
                    print(f"{wl.name} {policy} {replicas}r hicache {hc} x{r.concurrency}: "
                          f"{r.steps_per_min:.1f} steps/min hit {r.hit_rate:.3f}/"
                          f"{r.ideal_hit_rate:.3f} pauses {r.pauses} "
                          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            pre = (f"Command: `.venv/bin/python bench/replay/compare.py "
                   f"{shlex.join(sys.argv[1:])}` (virtual mode, this file: workload "
                   f"{wl.name}, {replicas} replicas, HiCache {hc}; "
                   f"{time.perf_counter() - started:.0f} s wall; load average {load_before} "
                   f"before, {load_avg()} after)\n\n{hicache_line(hc)}"
                   + ("" if args.tool_events else
                      "Tool events off: the core hears requests and program ends only, as "
                      "from a client written for ThunderAgent's API (no `ToolStarted` / "
                      "`ToolFinished`, so no predicted tool end).\n\n") +
                   f"Workload `{wl.name}`: {wl.rule} (`bench/replay/workloads.py`).\n\n"
                   f"{describe_run(fit, wl.gaps, None)}\n\n"
                   f"KV pool {pool:,} tokens per H100 engine (h100-qwen3-8b preset, page 64); "
                   f"mean peak context of the sampled sessions {mean_peak:,.0f} tokens; "
                   f"programs that fit = floor({replicas} x {pool:,} / {mean_peak:,.0f}) = "
                   f"{fits}; concurrency "
                   f"{', '.join(f'{m}x = {m * fits}' for m in multiples)}; run length "
                   f"{duration_s:g} modelled s; seed {args.seed}; policy knobs "
                   f"{json.dumps(knobs) if knobs else 'defaults'}")
            suffix = "-hicache" if hc == "on" else ""
            paths = write(reports, out, f"{args.name}-{wl.name}-{replicas}r{suffix}", pre,
                          baseline="round_robin")
            md = paths[0]
            md.write_text(md.read_text() + "\n"
                          + targets(reports, fits, args.target_policy, args.anchor) + "\n")
            for path in paths:
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
