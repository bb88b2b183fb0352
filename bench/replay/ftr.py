"""Time to the final answer (FTR) with Sutradhara's tool levers, virtual mode.

For one workload (``workloads.py``) and one policy, runs the replay with no lever, each lever
alone (``split``: tool-aware prompt split; ``stream``: streaming tool dispatch) and both, at
low load (a quarter of the programs whose contexts fit the KV pools, at least 1: no KV
pressure, the paper's regime) and at 3x oversubscription (``compare.fitting_programs``).
The rules of both levers are ``thunder_sim/replay/tool_levers.py``; FTR is defined in
``thunder_sim/replay/metrics.py``. Writes ``bench/results/sutradhara/<name>.{md,json}``.

    nice .venv/bin/python bench/replay/ftr.py [--workload short] [--replicas 2] \\
        [--policy thunder] [--duration-s S] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from compare import fitting_programs, load_avg
from workloads import WORKLOADS, workload

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.tool_levers import ToolLevers
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

OUT = Path(__file__).resolve().parents[1] / "results" / "sutradhara"
LEVERS = (ToolLevers(), ToolLevers(prompt_split=True), ToolLevers(streaming_dispatch=True),
          ToolLevers(streaming_dispatch=True, prompt_split=True))


def _f(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:,.{digits}f}"


def table(rows: list[tuple[str, RunReport]]) -> str:
    base = {load: r for load, r in rows if r.extra["levers"] == "none"}
    head = ("| load | programs | levers | sessions done | FTR p50 s | FTR p90 s | "
            "FTR p50 vs none | session p50 s | steps/min | hit rate | prompt splits |")
    lines = [head, "|" + "---|" * 11]
    for load, r in rows:
        b = base.get(load)
        rel = (f"{100 * (r.ftr_p50_s / b.ftr_p50_s - 1):+.1f}%"
               if b is not None and b.ftr_p50_s and not math.isnan(r.ftr_p50_s) else "-")
        lines.append(
            f"| {load} | {r.concurrency} | {r.extra['levers']} | {r.sessions_done} | "
            f"{_f(r.ftr_p50_s)} | {_f(r.ftr_p90_s)} | {rel} | {_f(r.session_p50_s, 1)} | "
            f"{r.steps_per_min:,.1f} | {r.hit_rate:.3f} | {r.extra['prompt_splits']:,} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="short", choices=WORKLOADS)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--policy", default="thunder")
    ap.add_argument("--sessions", type=int, default=None)
    ap.add_argument("--duration-s", type=float, default=None,
                    help="modelled s per run, recycling sessions (default: every session once, "
                         "so every run's FTR is over the same sessions)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default=None, help="default ftr-<workload>-<replicas>r")
    args = ap.parse_args()
    wl = workload(args.workload, args.seed, args.sessions)
    fit = wl.load()
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    fits = fitting_programs(args.replicas, pool, mean_peak)
    loads = {"low": max(1, fits // 4), "3x": 3 * fits}
    rows: list[tuple[str, RunReport]] = []
    load_before = load_avg()
    started = time.perf_counter()
    for load, concurrency in loads.items():
        for levers in LEVERS:
            cfg = VirtualConfig(policy=args.policy, replicas=args.replicas,
                                concurrency=concurrency, gaps=wl.gaps,
                                duration_s=args.duration_s, levers=levers,
                                label=f"{load} {levers.name}")
            t0 = time.perf_counter()
            r = VirtualReplay(fit.programs, cfg, fit=fit.describe()).run()
            rows.append((load, r))
            print(f"{load} x{concurrency} {levers.name}: FTR p50 {r.ftr_p50_s:.2f} s over "
                  f"{r.sessions_done} sessions ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    name = args.name or f"ftr-{wl.name}-{args.replicas}r"
    OUT.mkdir(parents=True, exist_ok=True)
    md = OUT / f"{name}.md"
    md.write_text("\n".join([
        f"# FTR with Sutradhara's tool levers: {name}", "",
        f"Command: `nice .venv/bin/python bench/replay/ftr.py {' '.join(sys.argv[1:])}` "
        f"(virtual mode, policy `{args.policy}`, {args.replicas} replicas; "
        f"{time.perf_counter() - started:.0f} s wall; load average {load_before} before, "
        f"{load_avg()} after)", "",
        f"Workload `{wl.name}`: {wl.rule} (`bench/replay/workloads.py`).", "",
        describe_run(fit, wl.gaps, None), "",
        f"KV pool {pool:,} tokens per engine; programs that fit = {fits}; low load = "
        f"{loads['low']} programs (fits // 4), 3x = {loads['3x']}; "
        + (f"{args.duration_s:g} modelled s per run" if args.duration_s else
           f"every one of the {len(fit.programs)} sessions played once per run (the load falls "
           f"in the last sessions' tail)")
        + f", seed {args.seed}. Lever rules: `thunder_sim/replay/tool_levers.py` (a tool "
        f"call's last argument token is {LEVERS[0].trailing_tokens} tokens before the end of its "
        f"response; one call per response). FTR over the sessions that completed in the run.",
        "", table(rows), ""]))
    js = OUT / f"{name}.json"
    js.write_text(json.dumps([{"load": load, **r.as_dict()} for load, r in rows], indent=1,
                             default=str) + "\n")
    print(f"wrote {md}\nwrote {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
