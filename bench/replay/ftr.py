"""Time to the final answer (FTR) with Sutradhara's three levers, virtual mode: the anchor's
two figures (issue 11).

For each workload (``workloads.py``: ``long`` Claude Code sessions, ``parallel`` tool calls),
policy ``thunder`` on 2 replicas:

1. **FTR at equal load, ablation**: no lever, each lever alone (``split``: tool-aware prompt
   split; ``stream``: streaming tool dispatch; ``cache``: cache hints) and all three, at low
   load (a quarter of the programs whose contexts fit the KV pools, at least 1: the paper's
   regime) and at high load (3x oversubscription, ``compare.fitting_programs``). Median and
   p90 FTR.
2. **Load at equal median FTR**: ``none`` and ``all`` over a sweep of offered loads (programs in
   flight, as multiples of the programs that fit); for each of ``none``'s points, the load at
   which ``all`` reaches the same median FTR, interpolated linearly between ``all``'s points
   (FTR rises with load), and its ratio to ``none``'s load.

Every run plays every session of the workload once (so each row is over the same sessions),
and every figure pools the FTR of ``--seeds`` runs (seeds 1..n draw different sessions): one
run's median moves by up to 33% when nothing but the replay's fast-forward horizon changes
(``bench/results/sutradhara/README.md``), five seeds pooled by about 6%. The lever rules are
``thunder_sim/replay/tool_levers.py``; FTR is defined in ``thunder_sim/replay/metrics.py``.
Writes ``bench/results/sutradhara/<name>.{md,json,png}``.

    nice .venv/bin/python bench/replay/ftr.py [--workloads long,parallel] [--seeds 3] \\
        [--sweep 0.25,0.5,1,2,3] [--replicas 2] [--policy thunder] [--name ftr]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compare import fitting_programs, load_avg
from workloads import WORKLOADS, Workload, workload

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.metrics import FTR_PARTS, anatomy_shares
from thunder_sim.replay.tool_levers import ToolLevers
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

OUT = Path(__file__).resolve().parents[1] / "results" / "sutradhara"
ABLATION = ("none", "split", "stream", "cache", "all")
PRESET = "h100-qwen3-8b"


def levers_of(name: str, parallel_calls: int) -> ToolLevers:
    on = {"split": name in ("split", "all"), "stream": name in ("stream", "all"),
          "cache": name in ("cache", "all")}
    return ToolLevers(streaming_dispatch=on["stream"], prompt_split=on["split"],
                      cache_hints=on["cache"], parallel_calls=parallel_calls)


@dataclass
class Pooled:
    """One (workload, load, levers) point, pooled over seeds."""

    levers: str
    concurrency: list[int] = field(default_factory=list)
    ftr_s: list[float] = field(default_factory=list)
    session_s: list[float] = field(default_factory=list)
    hit_rates: list[float] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    parts: list[dict[str, float]] = field(default_factory=list)
    """Each completed session's FTR split by ``metrics.FTR_PARTS`` (seconds)."""

    @property
    def p50(self) -> float:
        return statistics.median(self.ftr_s) if self.ftr_s else math.nan

    @property
    def p90(self) -> float:
        return quantile(self.ftr_s, 0.9)

    def as_dict(self) -> dict[str, object]:
        return {"levers": self.levers, "concurrency": self.concurrency,
                "ftr_p50_s": self.p50, "ftr_p90_s": self.p90, "sessions": len(self.ftr_s),
                "session_p50_s": statistics.median(self.session_s) if self.session_s
                else math.nan, "hit_rate": statistics.fmean(self.hit_rates),
                "split_actions": self.splits, "ftr_anatomy": anatomy_shares(self.parts)}


def quantile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_point(wl: Workload, seeds: int, multiple: float, levers: str, replicas: int,
              policy: str) -> Pooled:
    pooled = Pooled(levers)
    pool = get_preset(PRESET).kv_pool_tokens
    for seed in range(1, seeds + 1):
        fit = workload(wl.name, seed).load()
        mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
        concurrency = max(1, round(multiple * fitting_programs(replicas, pool, mean_peak)))
        replay = VirtualReplay(fit.programs, VirtualConfig(
            policy=policy, replicas=replicas, concurrency=concurrency, gaps=wl.gaps,
            levers=levers_of(levers, wl.parallel_calls), label=f"{multiple:g}x {levers}"))
        report = replay.run()
        pooled.concurrency.append(concurrency)
        pooled.ftr_s += replay.recorder.ftr_s
        pooled.session_s += replay.recorder.session_s
        pooled.parts += replay.recorder.ftr_parts
        pooled.hit_rates.append(report.hit_rate)
        for k, v in report.extra.get("split_actions", {}).items():
            pooled.splits[k] = pooled.splits.get(k, 0) + v
    return pooled


def load_at_ftr(points: list[tuple[float, float]], target: float) -> float | None:
    """The load at which the curve ``points`` ((load, median FTR), load ascending) reaches
    ``target``: linear between the two points around the first crossing; None when it never
    reaches it within the sweep (it stays below: more than the largest load) or starts above
    (less than the smallest)."""
    for (l0, f0), (l1, f1) in itertools.pairwise(points):
        if f0 <= target <= f1:
            return l0 if f1 == f0 else l0 + (target - f0) * (l1 - l0) / (f1 - f0)
    return None


def _f(v: float, digits: int = 1) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.{digits}f}"


def _rel(v: float, base: float) -> str:
    return "-" if math.isnan(v) or math.isnan(base) or not base else f"{100 * (v / base - 1):+.1f}%"


def ablation_table(points: Points, loads: dict[str, float]) -> str:
    lines = ["| levers | " + " | ".join(
        f"{load}: FTR p50 s | p50 vs none | p90 s | p90 vs none | hit rate"
        for load in loads) + " |", "|---|" + "---|" * (5 * len(loads))]
    for lv in ABLATION:
        cells = []
        for load in loads:
            p, b = points[(load, lv)], points[(load, "none")]
            cells.append(f"{_f(p.p50)} | {_rel(p.p50, b.p50)} | {_f(p.p90)} | "
                         f"{_rel(p.p90, b.p90)} | {statistics.fmean(p.hit_rates):.3f}")
        lines.append(f"| {lv} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def anatomy_table(points: Points, loads: dict[str, float]) -> str:
    """Where the FTR seconds went (``metrics.ftr_anatomy``), with no levers and with all."""
    lines = ["| load | levers | " + " | ".join(f"{k} %" for k in FTR_PARTS) + " |",
             "|---|---|" + "---|" * len(FTR_PARTS)]
    for load in loads:
        for lv in ("none", "all"):
            shares = anatomy_shares(points[(load, lv)].parts)
            lines.append(f"| {load} | {lv} | " + " | ".join(
                f"{100 * shares.get(k, math.nan):.1f}" for k in FTR_PARTS) + " |")
    return "\n".join(lines)


Sweep = dict[str, list[tuple[float, Pooled]]]
Points = dict[tuple[str, str], Pooled]


@dataclass
class WorkloadResult:
    workload: Workload
    points: Points
    """(load name, levers) -> pooled point of the ablation."""
    sweep: Sweep
    """levers -> [(load multiple, pooled point)] for none and all."""


def sweep_table(sweep: Sweep) -> tuple[str, list[dict[str, object]]]:
    all_curve = [(m, p.p50) for m, p in sweep["all"]]
    lines = ["| load (x fit) | programs | none: FTR p50 s | all: FTR p50 s | all vs none | "
             "load at which all reaches none's FTR | load gain |", "|---|" + "---|" * 6]
    rows: list[dict[str, object]] = []
    for (m, none), (_, every) in zip(sweep["none"], sweep["all"], strict=True):
        at = load_at_ftr(all_curve, none.p50)
        if at is not None:
            where, gain = f"{at:.2f}x", f"{100 * (at / m - 1):+.0f}%"
        elif none.p50 > all_curve[-1][1]:
            where, gain = f"> {all_curve[-1][0]:g}x (beyond the sweep)", \
                f"> {100 * (all_curve[-1][0] / m - 1):+.0f}%"
        else:
            where, gain = f"< {all_curve[0][0]:g}x", "-"
        rows.append({"load_x": m, "none_p50_s": none.p50, "all_p50_s": every.p50,
                     "all_load_at_none_ftr_x": at})
        lines.append(f"| {m:g}x | {'/'.join(map(str, none.concurrency))} | {_f(none.p50)} | "
                     f"{_f(every.p50)} | {_rel(every.p50, none.p50)} | {where} | {gain} |")
    return "\n".join(lines), rows


def plot(path: Path, results: dict[str, WorkloadResult], loads: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8), squeeze=False)
    for col, name in enumerate(names):
        points = results[name].points
        ax = axes[0][col]
        width = 0.8 / len(loads)
        for i, load in enumerate(loads):
            base = points[(load, "none")].p50
            ax.bar([j + i * width for j in range(len(ABLATION))],
                   [100 * (points[(load, lv)].p50 / base - 1) for lv in ABLATION], width,
                   label=f"{load} load")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.axhline(-20, color="grey", linestyle="--", linewidth=0.8, label="target -20% (3x)")
        ax.set_xticks([j + width * (len(loads) - 1) / 2 for j in range(len(ABLATION))])
        ax.set_xticklabels(ABLATION)
        ax.set_ylabel("median FTR vs none, %")
        ax.set_title(f"{name}: FTR at equal load (pooled seeds)")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        sweep = results[name].sweep
        for lv in ("none", "all"):
            ax.plot([m for m, _ in sweep[lv]], [p.p50 for _, p in sweep[lv]], marker="o",
                    label=lv)
        ax.set_xlabel("offered load (programs in flight, x the programs that fit)")
        ax.set_ylabel("median FTR, s")
        ax.set_title(f"{name}: load at equal median FTR")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="long,parallel",
                    help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--seeds", type=int, default=3, help="runs pooled per point (seeds 1..n)")
    ap.add_argument("--sweep", default="0.25,0.5,1,2,3",
                    help="offered loads for none and all, as multiples of the programs that "
                         "fit (must hold 0.25 and 3, the ablation's low and high loads)")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--policy", default="thunder")
    ap.add_argument("--name", default="ftr")
    args = ap.parse_args()
    names = [w for w in args.workloads.split(",") if w]
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        ap.error(f"--workloads: unknown {bad or names}; choose from {', '.join(WORKLOADS)}")
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        multiples = sorted({float(x) for x in args.sweep.split(",") if x})
    except ValueError:
        ap.error(f"--sweep must be a comma list of numbers, got {args.sweep!r}")
    loads = {"low": 0.25, "3x": 3.0}
    if not set(loads.values()) <= set(multiples) or multiples[0] <= 0:
        ap.error("--sweep must be positive and hold 0.25 and 3")
    load_before = load_avg()
    started = time.perf_counter()
    results: dict[str, WorkloadResult] = {}
    for name in names:
        wl = workload(name)
        cache: dict[tuple[float, str], Pooled] = {}

        def point(multiple: float, lv: str, wl: Workload = wl,
                  cache: dict[tuple[float, str], Pooled] = cache) -> Pooled:
            if (multiple, lv) not in cache:
                t0 = time.perf_counter()
                cache[(multiple, lv)] = p = run_point(wl, args.seeds, multiple, lv,
                                                      args.replicas, args.policy)
                print(f"{wl.name} {multiple:g}x {lv}: FTR p50 {p.p50:.1f} s p90 {p.p90:.1f} s "
                      f"over {len(p.ftr_s)} sessions ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
            return cache[(multiple, lv)]

        points = {(load, lv): point(m, lv) for load, m in loads.items() for lv in ABLATION}
        sweep = {lv: [(m, point(m, lv)) for m in multiples] for lv in ("none", "all")}
        results[name] = WorkloadResult(wl, points, sweep)
    wall = time.perf_counter() - started
    OUT.mkdir(parents=True, exist_ok=True)
    md, js, png = (OUT / f"{args.name}.{ext}" for ext in ("md", "json", "png"))
    plot(png, results, loads)
    parts = [
        "# FTR with Sutradhara's three levers: ablation and load at equal FTR", "",
        f"Command: `nice .venv/bin/python bench/replay/ftr.py {shlex.join(sys.argv[1:])}` "
        f"(virtual mode, policy `{args.policy}`, {args.replicas} replicas of `{PRESET}`, "
        f"{args.seeds} seeds pooled per point; {wall:.0f} s wall; load average {load_before} "
        f"before, {load_avg()} after)", "",
        "Levers (`thunder_sim/replay/tool_levers.py`): `split` = tool-aware prompt split under "
        "the guard of `thunder_scheduling/prompt_split.py`; `stream` = streaming tool dispatch; "
        "`cache` = cache hints (`back_in` with each tool's duration; the trace offers nothing "
        "for `shared_prefix` / `context_compacted`). FTR = user message to the final answer's "
        "first token, pooled over the seeds' sessions.", "",
        f"![FTR]({png.name})", ""]
    dump: dict[str, object] = {}
    for name, res in results.items():
        wl, points = res.workload, res.points
        table, rows = sweep_table(res.sweep)
        conc = {load: points[(load, "none")].concurrency for load in loads}
        parts += [f"## {name}", "", f"Workload: {wl.rule} (`bench/replay/workloads.py`). "
                  f"Programs in flight per seed: low {conc['low']}, 3x {conc['3x']}.", "",
                  "FTR at equal load (median and p90 pooled over seeds; hit rate: mean of "
                  "runs):", "", ablation_table(points, loads), "",
                  "Where the FTR went (share of the sessions' FTR seconds; `held`: the "
                  "scheduler held the request, its program paused or queued; `engine`: admitted "
                  "to first token, the engine's queue and prefill; `decode`: the turn's earlier "
                  "answers; `tools`: tool calls, subagents and the gaps between; "
                  "`thunder_sim/replay/metrics.py`). The split and the cache hints act on "
                  "`engine` (and, through pre-restores, `held`), streaming dispatch on the last "
                  "tokens of `decode` after each call's arguments close:", "",
                  anatomy_table(points, loads), "",
                  "Load at equal median FTR (none vs all):", "", table, ""]
        dump[name] = {"ablation": {f"{load} {lv}": p.as_dict() for (load, lv), p in
                                   points.items()}, "sweep": rows}
    md.write_text("\n".join(parts))
    js.write_text(json.dumps(dump, indent=1, default=str) + "\n")
    print(f"wrote {md}\nwrote {js}\nwrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
