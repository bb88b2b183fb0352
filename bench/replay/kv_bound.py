"""How much of the gap between policies the KV pool leaves to a scheduler: the same sessions and
programs on engines whose device KV pool is the preset's times ``--pool-multiples``.

At 1x the pool is the H100 preset's (what ``compare.py`` measures); at a large multiple every
program's KV stays resident for its whole life, so no scheduler can lose a hit and the decode
batch holds every program that is reasoning: the steps/min there is what the same compute gives
when memory is not the limit, an upper bound for any scheduler on the 1x fleet at that load
(more memory can only keep more KV and batch more requests). The engine-time columns say why:
on long sessions the engines spend most of their time in decode, whose cost per output token is
about (weights + batch context) / batch, so throughput follows the mean decode batch, and the
batch is bounded by the device memory left after the KV of programs that are in tools.

    .venv/bin/python bench/replay/kv_bound.py [--workload long] [--replicas 2] \\
        [--multiple 3] [--pool-multiples 1,1.5,2,4,10] [--policies thunder,thunderagent,round_robin]

Writes ``bench/results/replay/kv-bound-<workload>-<replicas>r.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from compare import OUT, fitting_programs, load_avg
from workloads import WORKLOADS, workload

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.replay.cli import describe_run
from thunder_sim.replay.metrics import RunReport
from thunder_sim.replay.report import pyplot
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay


def row(r: RunReport, pool_multiple: float, bound: float) -> str:
    e = r.extra
    return (f"| {r.policy} | {pool_multiple:g} | {r.steps_per_min:.1f} | "
            f"{r.steps_per_min / bound:.0%} | {r.hit_rate:.3f} | {r.ideal_hit_rate:.3f} | "
            f"{100 * e['prefill_share']:.1f} | {100 * e['decode_share']:.1f} | "
            f"{e['decode_batch_mean']:.1f} | {e['decode_context_per_request']:,} | "
            f"{r.step_latency_p99_s:.0f} |")


def plot(runs: list[tuple[float, RunReport]], path: Path, title: str) -> bool:
    plt = pyplot(path)
    if plt is None:
        return False

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for policy in dict.fromkeys(r.policy for _, r in runs):
        pts = sorted((m, r) for m, r in runs if r.policy == policy)
        xs = [m for m, _ in pts]
        ax1.plot(xs, [r.steps_per_min for _, r in pts], marker="o", label=policy)
        ax2.plot(xs, [r.extra["decode_batch_mean"] for _, r in pts], marker="o", label=policy)
    for ax, label in ((ax1, "steps/min"), (ax2, "mean decode batch per engine")):
        ax.set_xscale("log")
        ax.set_xlabel("device KV pool, x the H100 preset")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="long", choices=WORKLOADS)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--multiple", type=int, default=3,
                    help="programs = this x the programs that fit the 1x pools")
    ap.add_argument("--pool-multiples", default="1,1.5,2,4,10")
    ap.add_argument("--policies", default="thunder,thunderagent,round_robin")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=None)
    args = ap.parse_args()
    try:
        pool_multiples = [float(m) for m in args.pool_multiples.split(",")]
    except ValueError:
        ap.error(f"--pool-multiples must be a comma list of numbers, got {args.pool_multiples!r}")
    if not pool_multiples or min(pool_multiples) < 1:
        ap.error("--pool-multiples must be >= 1")
    if args.replicas < 1 or args.multiple < 1:
        ap.error("--replicas and --multiple must be >= 1")
    wl = workload(args.workload, args.seed)
    fit = wl.load()
    duration_s = args.duration_s or wl.duration_s
    pool = get_preset("h100-qwen3-8b").kv_pool_tokens
    mean_peak = sum(p.peak_context_tokens for p in fit.programs) / len(fit.programs)
    programs = fitting_programs(args.replicas, pool, mean_peak) * args.multiple
    load_before = load_avg()
    started = time.perf_counter()
    runs: list[tuple[float, RunReport]] = []
    for pool_multiple in pool_multiples:
        for policy in args.policies.split(","):
            cfg = VirtualConfig(
                policy=policy, replicas=args.replicas, concurrency=programs, gaps=wl.gaps,
                duration_s=duration_s,
                engine_overrides={"kv_pool_tokens": int(pool * pool_multiple)})
            r = VirtualReplay(fit.programs, cfg, fit=fit.describe()).run()
            runs.append((pool_multiple, r))
            print(f"{policy} pool x{pool_multiple:g}: {r.steps_per_min:.1f} steps/min, "
                  f"hit {r.hit_rate:.3f}, decode batch {r.extra['decode_batch_mean']}",
                  file=sys.stderr, flush=True)
    bound = max(r.steps_per_min for _, r in runs)
    name = f"kv-bound-{wl.name}-{args.replicas}r"
    lines = [
        f"# Replay: {name}", "",
        f"Command: `.venv/bin/python bench/replay/kv_bound.py {shlex.join(sys.argv[1:])}` "
        f"(virtual mode; {time.perf_counter() - started:.0f} s wall; load average "
        f"{load_before} before, {load_avg()} after)", "",
        f"Workload `{wl.name}`: {wl.rule}. {describe_run(fit, wl.gaps, None)}", "",
        f"{programs} programs ({args.multiple}x the {programs // args.multiple} whose mean peak "
        f"context fits the 1x pools) on {args.replicas} engines, {duration_s:g} modelled s; "
        f"device KV pool {pool:,} tokens per engine at 1x, times the pool multiple; "
        "everything else (compute, bandwidth, sessions, seed) equal. `of best` = steps/min "
        "over the best row of this table (the largest pool: memory no longer binds).", "",
        "| policy | pool multiple | steps/min | of best | hit rate | ideal | prefill % | "
        "decode % | mean decode batch | context per decoding request | step p99 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(row(r, m, bound) for m, r in runs),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    md = OUT / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    js = OUT / f"{name}.json"
    js.write_text(json.dumps([{"pool_multiple": m, **r.as_dict()} for m, r in runs], indent=1,
                             default=str) + "\n")
    written = [md, js]
    png = OUT / f"{name}.png"
    if plot(runs, png, f"{name}: {programs} programs, {args.replicas} engines"):
        written.append(png)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
