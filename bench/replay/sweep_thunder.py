"""Sweep the thunder policy's acting half-life and watermarks on the replay (virtual mode).

The same sessions, seed and fleet as ``compare.py`` (h100-qwen3-8b, 2 replicas by default),
at 1x and 3x the programs that fit the KV pools; one row per (half-life, watermarks,
concurrency) with steps/min, hit rate against the ideal, pauses and forced (aging) restores.
Writes ``bench/results/replay/sweep-thunder.md`` (+ ``.json``). docs/scheduling.md cites it
for the defaults.

    .venv/bin/python bench/replay/sweep_thunder.py [--half-lives 1,10,30,120,600] \\
        [--watermarks 0.95/0.80,0.98/0.90] [--multiples 1,3] [--replicas 2]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from compare import OUT, fitting_programs

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half-lives", default="1,10,30,120,600")
    ap.add_argument("--watermarks", default="0.95/0.80,0.98/0.90")
    ap.add_argument("--multiples", default="1,3")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--tool-gap-cap-s", type=float, default=300.0)
    ap.add_argument("--name", default="sweep-thunder")
    args = ap.parse_args()
    fit = ContextFit(sessions=args.sessions, seed=args.seed).load(default_trace_dir())
    gaps = GapPolicy(tool_gap_cap_s=args.tool_gap_cap_s)
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    fits = fitting_programs(args.replicas, pool, mean_peak)
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    for marks in args.watermarks.split(","):
        high, low = (float(v) for v in marks.split("/"))
        for half_life in (float(h) for h in args.half_lives.split(",")):
            for mult in (int(m) for m in args.multiples.split(",")):
                knobs = {"acting_half_life_s": half_life, "high_watermark": high,
                         "low_watermark": low}
                cfg = VirtualConfig(policy="thunder", policy_knobs=knobs,
                                    replicas=args.replicas, concurrency=fits * mult, gaps=gaps,
                                    duration_s=args.duration_s)
                r = VirtualReplay(fit.programs, cfg, fit=fit.describe()).run()
                row = {"half_life_s": half_life, "high": high, "low": low,
                       "programs": r.concurrency, "multiple": mult,
                       "steps_per_min": r.steps_per_min, "hit_rate": r.hit_rate,
                       "ideal_hit_rate": r.ideal_hit_rate,
                       "hit_share": r.hit_rate / r.ideal_hit_rate, "pauses": r.pauses,
                       "forced": r.extra.get("scheduler_forced_restores", 0),
                       "step_p50_s": r.step_latency_p50_s,
                       "max_paused_s": r.max_paused_s}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    head = ("| half-life s | high/low | programs | steps/min | hit rate | % of ideal | pauses "
            "| forced restores | step p50 s | max paused s |")
    lines = [f"# Sweep: thunder half-life and watermarks ({args.replicas} replicas)", "",
             f"Command: `.venv/bin/python bench/replay/sweep_thunder.py "
             f"{shlex.join(sys.argv[1:])}` (virtual mode, "
             f"{time.perf_counter() - started:.0f} s wall)", "",
             describe_run(fit, gaps, None), "",
             f"{fits} programs fit the pools (floor({args.replicas} x {pool:,} / "
             f"{mean_peak:,.0f})); seed {args.seed}; {args.duration_s:g} modelled s per run.", "",
             head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['half_life_s']:g} | {r['high']:.2f}/{r['low']:.2f} | {r['programs']} "
            f"({r['multiple']}x) | {r['steps_per_min']:.1f} | {r['hit_rate']:.3f} | "
            f"{r['hit_share']:.0%} | {r['pauses']} | {r['forced']:g} | "
            f"{r['step_p50_s']:.1f} | {r['max_paused_s']:.0f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (OUT / f"{args.name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {OUT / args.name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
