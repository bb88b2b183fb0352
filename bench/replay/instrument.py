"""The instrument's own speed: virtual mode over N full sessions (target: 100 in < 60 s).

    .venv/bin/python bench/replay/instrument.py [--sessions 100] [--profile]

Prints load time, replay time, steps and engine iterations; with --profile, the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--policy", default="thunder")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    fit = ContextFit(sessions=args.sessions, seed=1).load(default_trace_dir())
    t1 = time.perf_counter()
    replay = VirtualReplay(fit.programs, VirtualConfig(policy=args.policy,
                                                       concurrency=args.concurrency))
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    report = replay.run()
    if prof:
        prof.disable()
    t2 = time.perf_counter()
    print(fit.describe())
    print(f"load {t1 - t0:.1f} s, replay {t2 - t1:.1f} s wall for {report.steps} steps "
          f"({report.duration_s:,.0f} modelled s, {report.steps_per_min:.1f} steps/min)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
