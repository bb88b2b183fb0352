"""A published HiCache figure reproduced: SGLang's multi-turn benchmark on the simulated engine.

The figure is in sgl-project/sglang, ``benchmark/hicache/disk.sh`` (read at commit c4090440):
one GPU serving Qwen/Qwen3-32B with ``--page-size 64 --enable-hierarchical-cache
--hicache-ratio 2 --hicache-size 50 --hicache-write-policy write_through``, driven by
``benchmark/hicache/bench_multiturn.py --num-clients 256 --max-parallel 32`` (ShareGPT text,
5 rounds of 512 new tokens and 64 output tokens per client, the first auto-run rate of 16
requests/s). The script records, for that run, ``cache_hit_rate: 0.3817`` and the
benchmark's summary; a second run with a disk tier behind the host pool records 0.6615.

This replays the same client (``thunder_sim/replay/multiturn.py``) against one simulated engine
with the same flags, on the ``h100-qwen3-32b`` preset: ``disk.sh`` does not name its GPU, and
SGLang refuses a host pool no larger than the device pool (``memory_pool_host.py``: "The host
memory should be larger than the device memory"), which the 50 GB host pool (190,734 tokens of
Qwen3-32B) only satisfies on an 80 GB-class GPU (H100/H800/A100: 22k device tokens here; an
H200 would hold 271k). With write-through the host pool holds everything the device does, so
the hit rate depends on the host pool, not on the GPU; times depend on the GPU, so they are
shown beside the published ones, not held to them.

The disk tier is not modelled: the "+ third tier" row gives the engine a host pool larger than
the whole run's 721k distinct tokens, which has the capacity of ``disk.sh``'s 200 GB disk tier
(763k tokens) but host-memory transfer times.

    .venv/bin/python bench/sim_engine/bench_hicache_multiturn.py [--seeds 5]

Writes ``bench/results/hicache/published-multiturn.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thunder_sim.costmodel import get_preset
from thunder_sim.engine import Engine, EngineConfig
from thunder_sim.replay.multiturn import MultiTurnConfig, MultiTurnResult, run_multiturn
from thunder_sim.replay.report import pyplot

OUT = Path(__file__).resolve().parents[1] / "results" / "hicache"
PRESET = "h100-qwen3-32b"
SOURCE = ("sgl-project/sglang `benchmark/hicache/disk.sh` (commit c4090440), "
          "`bench_multiturn.py --num-clients 256 --max-parallel 32`, Qwen3-32B")

PUBLISHED_HOST = {  # disk.sh, the run without the disk tier
    "cache_hit_rate": 0.381675786824275,
    "average_ttft_s": 9.04, "p90_ttft_s": 17.46, "median_ttft_s": 7.42,
    "average_latency_s": 17.25, "throughput_rps": 1.73,
}
PUBLISHED_DISK = {"cache_hit_rate": 0.6614896363279186, "average_ttft_s": 5.18,
                  "throughput_rps": 2.78}
TOLERANCE = 0.25
"""The issue's bound for a reproduced figure: within 25% of the published value."""


@dataclass(frozen=True)
class Setup:
    label: str
    flags: str
    overrides: dict[str, Any]
    published: dict[str, float] | None


SETUPS = (
    Setup("GPU only", "(no HiCache)", {}, None),
    Setup("HiCache, 50 GB host", "--enable-hierarchical-cache --hicache-size 50 "
          "--hicache-write-policy write_through",
          {"enable_hierarchical_cache": True, "hicache_size": 50,
           "hicache_write_policy": "write_through"}, PUBLISHED_HOST),
    Setup("+ third tier (as host)", "as above, --hicache-size 1000 (the disk tier's capacity)",
          {"enable_hierarchical_cache": True, "hicache_size": 1000,
           "hicache_write_policy": "write_through"}, PUBLISHED_DISK),
)

METRICS = (("cache_hit_rate", "hit rate", "{:.3f}"), ("average_ttft_s", "TTFT avg s", "{:.2f}"),
           ("median_ttft_s", "TTFT p50 s", "{:.2f}"), ("p90_ttft_s", "TTFT p90 s", "{:.2f}"),
           ("average_latency_s", "latency avg s", "{:.2f}"),
           ("throughput_rps", "throughput req/s", "{:.2f}"))


def run(setup: Setup, seed: int) -> MultiTurnResult:
    engine = Engine(EngineConfig.from_preset(PRESET, **setup.overrides),
                    get_preset(PRESET).cost_model())
    return run_multiturn(engine, MultiTurnConfig(seed=seed))


def summary(results: list[MultiTurnResult]) -> dict[str, dict[str, float]]:
    out = {}
    for key, _, _ in METRICS:
        values = [float(getattr(r, key)) for r in results]
        out[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    return out


def verdict(model: float, published: float) -> str:
    off = model / published - 1
    return f"{off:+.0%} ({'within' if abs(off) <= TOLERANCE else 'outside'} 25%)"


def plot(rows: list[tuple[Setup, dict[str, dict[str, float]]]], path: Path) -> bool:
    plt = pyplot(path)
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (key, label, _) in zip(axes, (METRICS[0], METRICS[1], METRICS[5]), strict=True):
        names = [s.label for s, _ in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [m[key]["mean"] for _, m in rows], 0.4,
               label="simulated (h100-qwen3-32b)")
        ax.bar([x + 0.2 for x in xs],
               [s.published.get(key, 0.0) if s.published else 0.0 for s, _ in rows], 0.4,
               label="published (disk.sh)")
        ax.set_xticks(list(xs), names, fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("SGLang HiCache multi-turn benchmark: published vs simulated", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5,
                    help="client seeds per setup (the script's --seed; 1 is its default)")
    ap.add_argument("--out", type=Path, default=OUT, help="directory for the results")
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    t0 = time.time()
    cpu0 = time.process_time()
    rows = [(s, summary([run(s, seed) for seed in range(1, args.seeds + 1)])) for s in SETUPS]
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    preset = get_preset(PRESET)
    cfg = EngineConfig.from_preset(PRESET, **SETUPS[1].overrides)

    lines = [
        "# A published HiCache figure, reproduced (SGLang's multi-turn benchmark)", "",
        f"Command: `.venv/bin/python bench/sim_engine/bench_hicache_multiturn.py --seeds "
        f"{args.seeds}` ({wall:.1f} s wall, {cpu:.1f} s CPU; load average "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())})", "",
        f"Source: {SOURCE}. Simulated: one `{PRESET}` engine ({preset.kv_pool_tokens:,} device "
        f"KV tokens; the 50 GB host pool is {cfg.host_pool_tokens:,} tokens), the benchmark's "
        f"client as `thunder_sim/replay/multiturn.py` models it, seeds 1-{args.seeds} "
        f"(mean, with the range over seeds in brackets).", "",
        "| setup | flags | " + " | ".join(label for _, label, _ in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for setup, m in rows:
        cells = [f"{fmt.format(m[k]['mean'])} [{fmt.format(m[k]['min'])}-"
                 f"{fmt.format(m[k]['max'])}]" for k, _, fmt in METRICS]
        lines.append(f"| {setup.label}, simulated | {setup.flags} | " + " | ".join(cells) + " |")
        if setup.published:
            pub = [fmt.format(setup.published[k]) if k in setup.published else "-"
                   for k, _, fmt in METRICS]
            lines.append(f"| {setup.label}, **published** | disk.sh | " + " | ".join(pub) + " |")
    host = dict(rows[1][1])
    disk = dict(rows[2][1])
    lines += [
        "", "Against the published run (model / published - 1; the issue's bound is 25%):", "",
        f"- **hit rate with the 50 GB host pool: {host['cache_hit_rate']['mean']:.3f} vs "
        f"{PUBLISHED_HOST['cache_hit_rate']:.3f}, "
        f"{verdict(host['cache_hit_rate']['mean'], PUBLISHED_HOST['cache_hit_rate'])}** (the "
        "figure held to the bound: it depends on the host pool and the request order, not on "
        "the unnamed GPU).",
        f"- hit rate with a tier as large as the disk tier: {disk['cache_hit_rate']['mean']:.3f} "
        f"vs {PUBLISHED_DISK['cache_hit_rate']:.3f} with the disk tier, "
        f"{verdict(disk['cache_hit_rate']['mean'], PUBLISHED_DISK['cache_hit_rate'])}.",
        f"- TTFT average {host['average_ttft_s']['mean']:.2f} s vs "
        f"{PUBLISHED_HOST['average_ttft_s']} s, "
        f"{verdict(host['average_ttft_s']['mean'], PUBLISHED_HOST['average_ttft_s'])}; "
        f"throughput {host['throughput_rps']['mean']:.2f} vs {PUBLISHED_HOST['throughput_rps']} "
        f"requests/s, "
        f"{verdict(host['throughput_rps']['mean'], PUBLISHED_HOST['throughput_rps'])}: times "
        "follow the GPU, which disk.sh does not name (shown, not held to the bound).",
        "",
        "Why the simulated hit rate sits below the published one: the simulated engine never "
        "caches a request's output tokens, so each round's match ends at the previous prompt: "
        "5,504 of a client's 8,320 prompt tokens can hit (0.662), against 5,760 (0.692) when "
        "SGLang also matches the previous answer. (A request retracted for memory and admitted "
        "again counts its own prompt as cached the second time, as SGLang reports it, which is "
        "how the third-tier row passes 0.662.) Without HiCache the 22k-token device pool holds "
        "less than the 32 requests in flight, so almost nothing hits.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    md = args.out / "published-multiturn.md"
    png = args.out / "published-multiturn.png"
    if plot(rows, png):
        lines += ["", f"![published vs simulated]({png.name})"]
    md.write_text("\n".join(lines) + "\n")
    (args.out / "published-multiturn.json").write_text(json.dumps({
        "source": SOURCE, "preset": PRESET, "seeds": args.seeds, "wall_s": wall,
        "setups": [{"label": s.label, "flags": s.flags, "simulated": m,
                    "published": s.published} for s, m in rows],
    }, indent=2) + "\n")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
