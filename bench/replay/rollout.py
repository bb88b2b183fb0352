"""RL rollout throughput on the simulated H100 / Qwen3-8B fleet, virtual mode.

Batches of GRPO groups (``thunder_sim.replay.rollout``: each group replays one session's first
prompt, then its samples diverge by the documented rule) played to the end, a weight update
(every engine flushed, the core told) between batches, for each policy at each replica count.
Writes ``bench/results/rollout/<name>-<replicas>r.{md,json,png}`` and checks the targets of
issue 12 for ``--target-policy`` (appended to the Markdown).

    .venv/bin/python bench/replay/rollout.py [--replicas 2,4] [--batches 3] [--samples 4] \\
        [--multiple 3] [--policies round_robin,cache_aware,thunderagent,thunder] [--seed 1]

**Sessions**: the ``short`` workload's (``workloads.py``: mini-SWE-agent-like programs, every
token count x 0.25, scaled peak <= 30,000 tokens, tool gaps capped at 1 s; the regime the
ThunderAgent paper's RL rollouts ran, mini-SWE-agent), each trimmed to its first
``--max-steps`` LLM steps (default 40: an RL framework caps a trajectory's turns).

**Batch size** = ``--multiple`` x the programs whose contexts fit the KV pools, rounded to whole
groups: programs that fit = floor(replicas x KV pool tokens / mean peak context of a probe batch
built by the same rule from every session), as in ``compare.py``.
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

from workloads import workload

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.report import pyplot
from thunder_sim.replay.rollout import (
    RolloutReplay,
    RolloutReport,
    RolloutShape,
    Trajectory,
    build_batches,
    tail_share,
)
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig

OUT = Path(__file__).resolve().parents[1] / "results" / "rollout"
POLICIES = "round_robin,cache_aware,thunderagent,thunder"
TARGETS = {"round_robin": 1.8, "cache_aware": 1.8, "thunderagent": 1.2}
TAIL_TARGET = 0.25


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def batch_groups(programs: int, multiple: float, samples: int) -> int:
    return max(1, round(multiple * programs / samples))


def solo_bounds(batch: list[Trajectory], gaps: GapPolicy) -> tuple[float, float]:
    """Each trajectory alone on one engine, all starting at 0: the longest one's time (no
    schedule can end the batch sooner) and the tail those end times give (the share of the
    makespan the last 10% take when nothing contends: what the lengths alone make of it)."""
    ends = []
    for t in batch:
        shape = RolloutShape(groups=1, samples=1, batches=1)
        one = RolloutReplay([[t]], VirtualConfig(policy="sticky", replicas=1, gaps=gaps), shape)
        ends.append(one.run_rollouts().batches[0].makespan_s)
    return max(ends), tail_share(ends, 0.0)


def markdown(reports: list[RolloutReport], target: str,
             bounds: list[tuple[float, float]],
             all_resident: tuple[float, RolloutReport] | None = None) -> str:
    lines = ["| policy | batch | programs | makespan s | trajectories/h | tail | hit rate | "
             "recomputed tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        for b in r.batches:
            lines.append(f"| {r.run.policy} | {b.batch} | {b.programs} | {b.makespan_s:,.0f} | "
                         f"{b.trajectories_per_hour:,.0f} | {b.tail_share:.0%} | "
                         f"{b.hit_rate:.3f} | {b.recomputed_tokens:,} |")
        lines.append(f"| **{r.run.policy}** | all | {sum(b.programs for b in r.batches)} | "
                     f"{sum(b.makespan_s for b in r.batches):,.0f} | "
                     f"**{r.trajectories_per_hour:,.0f}** | max {r.max_tail_share:.0%} | "
                     f"{r.hit_rate:.3f} | {r.recomputed_tokens:,} |")
    lines += ["", "Where the engines' time went over the whole run (all batches; "
              "`thunder_sim/replay/virtual.py` `engine_time`):", "",
              "| policy | prefill | decode | idle | mean decode batch | pauses | migrations |",
              "|---|---|---|---|---|---|---|"]
    for r in reports:
        x = r.run.extra
        lines.append(f"| {r.run.policy} | {x.get('prefill_share', math.nan):.0%} | "
                     f"{x.get('decode_share', math.nan):.0%} | "
                     f"{x.get('idle_share', math.nan):.0%} | "
                     f"{x.get('decode_batch_mean', math.nan):.1f} | {r.run.pauses} | "
                     f"{r.run.migrations} |")
    if bounds:
        lines += ["", "Alone (each trajectory by itself on one engine, all starting at 0): "
                  + "; ".join(f"{b.batch}: longest {crit:,.0f} s, tail {tail:.0%}"
                              for b, (crit, tail) in zip(reports[0].batches, bounds,
                                                         strict=True))
                  + ". No schedule ends a batch before its longest trajectory, and with nothing "
                  "contending the lengths alone give that tail."]
    by = {r.run.policy: r for r in reports}
    if all_resident is not None:
        multiple, mb = all_resident
        x = mb.run.extra
        ratios = ", ".join(f"{mb.trajectories_per_hour / r.trajectories_per_hour:.2f}x "
                           f"`{r.run.policy}`" for r in reports if r.trajectories_per_hour)
        lines += ["", f"All KV resident: `{mb.run.policy}` on device pools {multiple:g}x the "
                  f"preset's (nothing paused or evicted): "
                  f"**{mb.trajectories_per_hour:,.0f} trajectories/h** ({ratios} at 1x), hit "
                  f"rate {mb.hit_rate:.3f}, mean decode batch "
                  f"{x.get('decode_batch_mean', math.nan):.1f}, prefill "
                  f"{x.get('prefill_share', math.nan):.0%} / decode "
                  f"{x.get('decode_share', math.nan):.0%} / idle "
                  f"{x.get('idle_share', math.nan):.0%} of engine time, makespans "
                  + ", ".join(f"{b.makespan_s:,.0f} s" for b in mb.batches)
                  + ". What memory alone is worth: a perfect hit rate and the largest "
                  "batches. It is not a strict bound on a batch's makespan, which its slowest "
                  "trajectories set: with every program resident they decode in larger, slower "
                  "batches, so it can come out below the 1x run."]
    lines += ["", "Recomputed tokens: prompt tokens missed for any cause but first sight "
              "(the engines' recompute ledger), per batch; by cause, in % of the batch's prompt "
              "tokens, in the JSON file (`batches[].miss_tokens`).", ""]
    own = by.get(target)
    if own is None:
        return "\n".join(lines)
    lines += [f"Targets for `{target}` (measured in this run):", ""]
    for ref, goal in TARGETS.items():
        other = by.get(ref)
        if other is None or not other.trajectories_per_hour:
            continue
        x = own.trajectories_per_hour / other.trajectories_per_hour
        ceiling = ""
        if all_resident is not None:
            resident = all_resident[1].trajectories_per_hour / other.trajectories_per_hour
            ceiling = f"; with all KV resident {resident:.2f}x"
        lines.append(f"- trajectories/h {x:.2f}x `{ref}` (target >= {goal}x): "
                     f"{'MET' if x >= goal else 'MISSED'}{ceiling}")
    tails = ", ".join(f"{b.tail_share:.0%}" for b in own.batches)
    ok = own.max_tail_share <= TAIL_TARGET
    lines.append(f"- tail (last 10% of programs' share of the makespan) per batch {tails} "
                 f"(target <= {TAIL_TARGET:.0%}): {'MET' if ok else 'MISSED'}")
    lost = [b.batch for b in own.batches if b.programs != own.batches[0].programs]
    lines.append(f"- weight updates: {own.flushes} (every engine flushed, `BackendFlushed` to "
                 f"the core); programs lost: {'none' if not lost else ', '.join(lost)}")
    return "\n".join(lines)


def plot(reports: list[RolloutReport], path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(reports))
    for i, r in enumerate(reports):
        xs = [j + i * width for j in range(len(r.batches))]
        ax1.bar(xs, [b.trajectories_per_hour for b in r.batches], width, label=r.run.policy)
        ax2.bar(xs, [100 * b.tail_share for b in r.batches], width, label=r.run.policy)
    for ax, title in ((ax1, "trajectories per modelled hour"),
                      (ax2, "tail: last 10% of programs, % of makespan")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(reports[0].batches))])
        ax.set_xticklabels([b.batch for b in reports[0].batches])
        ax.set_title(title)
    ax2.axhline(100 * TAIL_TARGET, color="k", linestyle="--", linewidth=1)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", default="2,4")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (GRPO group)")
    ap.add_argument("--multiple", type=float, default=3.0,
                    help="batch size in multiples of the programs that fit the KV pools")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--length-sigma", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--knobs", default="{}",
                    help='JSON policy -> knobs, e.g. {"thunder": {"max_paused_s": 120}}')
    ap.add_argument("--no-alone", dest="alone", action="store_false",
                    help="skip replaying each trajectory alone (the longest one bounds the "
                         "makespan)")
    ap.add_argument("--target-policy", default="thunder")
    ap.add_argument("--bound-multiple", type=float, default=10.0,
                    help="also run --target-policy on device pools this many times the "
                         "preset's (every program's KV resident: what memory is worth); 0: skip")
    ap.add_argument("--name", default="rollout")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.bound_multiple < 0:
        ap.error("--bound-multiple must be >= 0 (0 skips the all-resident run)")
    knobs: dict[str, dict[str, Any]] = json.loads(args.knobs)
    wl = workload("short", args.seed)
    fit = ContextFit(context_tokens=wl.fit.context_tokens, token_scale=wl.fit.token_scale,
                     max_steps=args.max_steps, seed=args.seed).load(default_trace_dir())
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    probe = build_batches(fit.programs, RolloutShape(
        groups=len(fit.programs), samples=args.samples, batches=1,
        length_sigma=args.length_sigma, seed=args.seed))[0]
    mean_peak = sum(t.program.peak_context_tokens for t in probe) / len(probe)
    args.out.mkdir(parents=True, exist_ok=True)
    for replicas in (int(r) for r in args.replicas.split(",")):
        fits = max(1, math.floor(replicas * pool / mean_peak))
        shape = RolloutShape(groups=batch_groups(fits, args.multiple, args.samples),
                             samples=args.samples, batches=args.batches,
                             length_sigma=args.length_sigma, seed=args.seed)
        batches = build_batches(fit.programs, shape)
        load_before = load_avg()
        started = time.perf_counter()
        reports = []
        bounds = [solo_bounds(batch, wl.gaps) for batch in batches] if args.alone else []
        for policy in args.policies.split(","):
            cfg = VirtualConfig(policy=policy, policy_knobs=knobs.get(policy, {}),
                                replicas=replicas, gaps=wl.gaps, label=policy)
            t0 = time.perf_counter()
            r = RolloutReplay(batches, cfg, shape, fit=fit.describe()).run_rollouts()
            reports.append(r)
            print(f"{policy} {replicas}r: {r.trajectories_per_hour:,.0f} trajectories/h, max "
                  f"tail {r.max_tail_share:.0%}, hit {r.hit_rate:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        all_resident = None
        if args.bound_multiple:
            cfg = VirtualConfig(policy=args.target_policy,
                                policy_knobs=knobs.get(args.target_policy, {}),
                                replicas=replicas, gaps=wl.gaps, label=args.target_policy,
                                engine_overrides={
                                    "kv_pool_tokens": int(pool * args.bound_multiple)})
            mb = RolloutReplay(batches, cfg, shape, fit=fit.describe()).run_rollouts()
            all_resident = (args.bound_multiple, mb)
            print(f"{args.target_policy} {replicas}r, {args.bound_multiple:g}x pools: "
                  f"{mb.trajectories_per_hour:,.0f} trajectories/h", file=sys.stderr, flush=True)
        name = f"{args.name}-{replicas}r"
        pre = (f"# Rollout: {name}\n\nCommand: `.venv/bin/python bench/replay/rollout.py "
               f"{shlex.join(sys.argv[1:])}` (virtual mode, this file: {replicas} replicas; "
               f"{time.perf_counter() - started:.0f} s wall; load average {load_before} "
               f"before, {load_avg()} after)\n\n"
               f"{describe_run(fit, wl.gaps, None)}\n\n"
               f"Batches: {shape.batches} x {shape.groups} groups x {shape.samples} samples = "
               f"{shape.batch_programs} programs each (rule: `thunder_sim/replay/rollout.py`; "
               f"length sigma {shape.length_sigma}, seed {shape.seed}); KV pool {pool:,} tokens "
               f"per H100 engine (h100-qwen3-8b, page 64); mean peak context of the rollout "
               f"programs {mean_peak:,.0f} tokens; programs that fit = floor({replicas} x "
               f"{pool:,} / {mean_peak:,.0f}) = {fits}; batch = {args.multiple:g}x, rounded to "
               f"whole groups. Policy knobs {json.dumps(knobs) if knobs else 'defaults'}.\n\n")
        md = args.out / f"{name}.md"
        md.write_text(pre + markdown(reports, args.target_policy, bounds, all_resident) + "\n")
        (args.out / f"{name}.json").write_text(json.dumps(
            [r.as_dict() for r in reports], indent=1, default=str) + "\n")
        plot(reports, args.out / f"{name}.png")
        print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
