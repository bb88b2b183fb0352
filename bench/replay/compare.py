"""Policy comparison on the simulated H100 / Qwen3-8B fleet, virtual mode (issue 3 and 4).

Engine-only (round_robin) vs the SGLang router's cache_aware vs the scheduler's policies, at
1x-4x the number of programs whose contexts fit the KV pools, with 2 and 4 replicas, all in one
run with one seed. Writes bench/results/replay/compare-<replicas>r.{md,json,png}.

    .venv/bin/python bench/replay/compare.py [--replicas 2,4] [--policies ...] [--seed 1]

"Programs that fit" = total KV pool tokens / mean peak context of the sampled sessions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import write
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

OUT = Path(__file__).resolve().parents[1] / "results" / "replay"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="2,4")
    ap.add_argument("--policies", default="round_robin,cache_aware,thunder,continuum,autellix")
    ap.add_argument("--sessions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--tool-gap-cap-s", type=float, default=300.0)
    args = ap.parse_args()
    fit = ContextFit(sessions=args.sessions, seed=args.seed).load(default_trace_dir())
    gaps = GapPolicy(tool_gap_cap_s=args.tool_gap_cap_s)
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    for replicas in (int(r) for r in args.replicas.split(",")):
        fits = max(1, int(replicas * pool / mean_peak))
        reports = []
        for policy in args.policies.split(","):
            for mult in (1, 2, 3, 4):
                cfg = VirtualConfig(policy=policy, replicas=replicas, concurrency=fits * mult,
                                    gaps=gaps, duration_s=args.duration_s)
                reports.append(VirtualReplay(fit.programs, cfg, fit=fit.describe()).run())
                r = reports[-1]
                print(f"{policy} {replicas}r x{r.concurrency}: {r.steps_per_min:.1f} steps/min "
                      f"hit {r.hit_rate:.3f}", file=sys.stderr)
        pre = (f"`.venv/bin/python bench/replay/compare.py {' '.join(sys.argv[1:])}`\n\n"
               f"{describe_run(fit, gaps, None)}\nKV pool {pool:,} tokens per H100 engine; mean "
               f"peak context {mean_peak:,.0f} tokens; {fits} programs fit {replicas} pools; "
               f"run length {args.duration_s:g} modelled s; seed {args.seed}")
        for path in write(reports, OUT, f"compare-{replicas}r", pre, baseline="round_robin"):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
