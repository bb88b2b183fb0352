"""Policy comparison on the simulated H100 / Qwen3-8B fleet, virtual mode (issues 3 and 4).

Engine-only (``round_robin``: every request to the next engine) vs the SGLang router's
``cache_aware`` vs the scheduler's program-aware policies, at 1x-4x the number of programs
whose contexts fit the KV pools, with 2 and 4 replicas, every policy in the same run with the
same sessions and seed. Writes ``bench/results/replay/compare-<replicas>r.{md,json,png}`` and
checks issue 4's targets for ``thunder`` (appended to the Markdown).

    .venv/bin/python bench/replay/compare.py [--replicas 2,4] [--policies ...] [--seed 1]

**Programs that fit the KV pools** = floor(total KV pool tokens / mean peak context of the
sampled sessions), peak context = a session's largest prompt + output (subagents included):
the number of average sessions whose whole KV, at its largest, fits the pools at once. At 1x,
every program keeps its KV for its whole life; above it, programs must share.

**Session filter**: sessions whose peak prompt + output exceeds 131,072 tokens (Qwen3-8B with
YaRN; ``fit.py``) are dropped; the first ``--sessions`` that fit in a seeded shuffle are
replayed, recycled (fresh block keys) so every concurrency slot stays busy for
``--duration-s`` modelled seconds. Tool gaps are capped at ``--tool-gap-cap-s`` (default
300 s: the trace's p99 tool gap is 2,908 s, and an hour-long run would otherwise measure a
handful of long sleeps), human gaps at 0 (``player.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import write
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

OUT = Path(__file__).resolve().parents[1] / "results" / "replay"
MULTIPLES = (1, 2, 3, 4)


def fitting_programs(replicas: int, pool_tokens: int, mean_peak_tokens: float) -> int:
    return max(1, math.floor(replicas * pool_tokens / mean_peak_tokens))


def targets(reports: list[RunReport], fits: int, policy: str = "thunder") -> str:
    """Issue 4's targets for ``policy``, each with the measured value and MET / MISSED."""
    by = {(r.policy, r.concurrency): r for r in reports}
    own = [r for r in reports if r.policy == policy]
    if not own:
        return ""
    lines = [f"Issue 4 targets for `{policy}` (measured in this run):", ""]

    def ratio(a: RunReport | None, b: RunReport | None) -> float:
        return a.steps_per_min / b.steps_per_min if a and b and b.steps_per_min else math.nan

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    at3, at4 = by.get((policy, 3 * fits)), by.get((policy, 4 * fits))
    rr3 = ratio(at3, by.get(("round_robin", 3 * fits)))
    if not math.isnan(rr3):
        lines.append(f"- vs engine-only round-robin at 3x ({3 * fits} programs): {rr3:.2f}x "
                     f"steps/min (target >= 2x): {verdict(rr3 >= 2)}")
    peak = max(own, key=lambda r: r.steps_per_min)
    if at4 is not None:
        frac = at4.steps_per_min / peak.steps_per_min
        lines.append(f"- at 4x ({4 * fits} programs): {frac:.0%} of its own peak "
                     f"({peak.steps_per_min:.1f} steps/min at {peak.concurrency}) "
                     f"(target >= 90%): {verdict(frac >= 0.9)}")
    ca3 = ratio(at3, by.get(("cache_aware", 3 * fits)))
    if not math.isnan(ca3):
        lines.append(f"- vs cache_aware at 3x: {ca3:.2f}x steps/min (target >= 1.5x): "
                     f"{verdict(ca3 >= 1.5)}")
    for r in sorted(own, key=lambda r: r.concurrency):
        share = r.hit_rate / r.ideal_hit_rate
        lines.append(f"- hit rate at {r.concurrency} programs: {r.hit_rate:.3f} vs ideal "
                     f"{r.ideal_hit_rate:.3f} = {share:.0%} of ideal (target >= 95%): "
                     f"{verdict(share >= 0.95)}")
    worst = max(own, key=lambda r: r.max_paused_s)
    lines.append(f"- longest pause (Pause to Resume or Release, replay side): "
                 f"{worst.max_paused_s:.1f} s at {worst.concurrency} programs; scheduler's own "
                 f"max {max(r.extra.get('scheduler_max_paused_s', 0.0) for r in own):.1f} s "
                 f"(aging bound 300 s)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", default="2,4")
    ap.add_argument("--policies", default="round_robin,cache_aware,thunder,continuum,autellix")
    ap.add_argument("--sessions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--tool-gap-cap-s", type=float, default=300.0)
    ap.add_argument("--multiples", default=",".join(map(str, MULTIPLES)))
    ap.add_argument("--knobs", default="{}",
                    help='JSON policy -> knobs, e.g. {"thunder": {"acting_half_life_s": 30}}')
    ap.add_argument("--name", default="compare")
    args = ap.parse_args()
    knobs: dict[str, dict[str, Any]] = json.loads(args.knobs)
    fit = ContextFit(sessions=args.sessions, seed=args.seed).load(default_trace_dir())
    gaps = GapPolicy(tool_gap_cap_s=args.tool_gap_cap_s)
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    multiples = [int(m) for m in args.multiples.split(",")]
    for replicas in (int(r) for r in args.replicas.split(",")):
        fits = fitting_programs(replicas, pool, mean_peak)
        reports = []
        started = time.perf_counter()
        for policy in args.policies.split(","):
            for mult in multiples:
                cfg = VirtualConfig(policy=policy, policy_knobs=knobs.get(policy, {}),
                                    replicas=replicas, concurrency=fits * mult, gaps=gaps,
                                    duration_s=args.duration_s)
                t0 = time.perf_counter()
                r = VirtualReplay(fit.programs, cfg, fit=fit.describe()).run()
                reports.append(r)
                print(f"{policy} {replicas}r x{r.concurrency}: {r.steps_per_min:.1f} steps/min "
                      f"hit {r.hit_rate:.3f}/{r.ideal_hit_rate:.3f} pauses {r.pauses} "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        pre = (f"Command: `.venv/bin/python bench/replay/compare.py {' '.join(sys.argv[1:])}`"
               f" (virtual mode, {time.perf_counter() - started:.0f} s wall)\n\n"
               f"{describe_run(fit, gaps, None)}\n\n"
               f"KV pool {pool:,} tokens per H100 engine (h100-qwen3-8b preset, page 64); "
               f"mean peak context of the sampled sessions {mean_peak:,.0f} tokens; "
               f"programs that fit = floor({replicas} x {pool:,} / {mean_peak:,.0f}) = {fits}; "
               f"concurrency {', '.join(f'{m}x = {m * fits}' for m in multiples)}; "
               f"run length {args.duration_s:g} modelled s; seed {args.seed}; "
               f"policy knobs {json.dumps(knobs) if knobs else 'defaults'}")
        name = f"{args.name}-{replicas}r"
        paths = write(reports, OUT, name, pre, baseline="round_robin")
        md = paths[0]
        md.write_text(md.read_text() + "\n" + targets(reports, fits) + "\n")
        for path in paths:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
