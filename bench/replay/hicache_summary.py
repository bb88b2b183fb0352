"""Summary of the HiCache comparison (issue 14): every policy on engines with and without
SGLang's host tier, thunder's ratios and the recompute ledger against the targets.

Reads what ``compare.py --hicache off,on --out bench/results/hicache`` wrote
(``compare-<workload>-<replicas>r[-hicache].json``) and, for "without HiCache nothing gets
worse", the scheduling issue's files in ``bench/results/replay`` (``compare-<workload>-
<replicas>r.json``). Writes ``bench/results/hicache/summary.md`` and ``summary.png``.

    .venv/bin/python bench/replay/hicache_summary.py

Recomputed prompt tokens = the ledger's missed prompt tokens of every cause but first sight
(those no scheduler can avoid), as a share of prompt tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from thunder_sim.replay.report import pyplot

RESULTS = Path(__file__).resolve().parents[1] / "results"
OUT = RESULTS / "hicache"
BEFORE = RESULTS / "replay"
POLICIES = ("round_robin", "cache_aware", "thunderagent", "infercept", "kvflow", "thunder")


def load(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    if not path.exists():
        return {}
    return {(r["policy"], r["concurrency"]): r for r in json.loads(path.read_text())}


def recompute_share(r: dict[str, Any]) -> float:
    misses = r.get("miss_tokens") or {}
    made = sum(v for k, v in misses.items() if k != "first_sight")
    return made / r["prompt_tokens"] if r.get("prompt_tokens") else math.nan


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
    if a is None or b is None or not b["steps_per_min"]:
        return math.nan
    return float(a["steps_per_min"]) / float(b["steps_per_min"])


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> int:
    rows: list[str] = []
    checks: list[str] = []
    plot_points: list[tuple[str, dict[str, float], dict[str, float]]] = []
    for path in sorted(OUT.glob("compare-*-*r-hicache.json")):
        name = path.stem.removeprefix("compare-").removesuffix("-hicache")
        workload, replicas = name.rsplit("-", 1)
        replicas = replicas.removesuffix("r")
        on = load(path)
        off = load(OUT / f"compare-{name}.json")
        before = load(BEFORE / f"compare-{name}.json")
        concurrencies = sorted({c for _p, c in on})
        fits = min(concurrencies) // 3 if concurrencies else 1
        for conc in concurrencies:
            mult = f"{conc / fits:g}x"
            th_on, th_off = on.get(("thunder", conc)), off.get(("thunder", conc))
            cells = []
            for policy in POLICIES:
                r_on, r_off = on.get((policy, conc)), off.get((policy, conc))
                cells.append(
                    f"{r_off['steps_per_min']:.1f} / {r_on['steps_per_min']:.1f}"
                    if r_on and r_off else "-")
            rec = recompute_share(th_on) if th_on else math.nan
            rows.append(f"| {workload}, {replicas}, {mult} ({conc}) | " + " | ".join(cells)
                        + f" | {ratio(th_on, on.get(('thunderagent', conc))):.2f}x | "
                        f"{ratio(th_on, on.get(('infercept', conc))):.2f}x | "
                        f"{ratio(th_on, on.get(('kvflow', conc))):.2f}x | {100 * rec:.1f}% |")
            plot_points.append((f"{workload} {replicas} {mult}",
                                {p: on[(p, conc)]["steps_per_min"] for p in POLICIES
                                 if (p, conc) in on},
                                {p: off[(p, conc)]["steps_per_min"] for p in POLICIES
                                 if (p, conc) in off}))
            where = f"{workload}, {replicas} replicas, {mult}"
            if th_on is not None:
                x_ta = ratio(th_on, on.get(("thunderagent", conc)))
                x_ic = ratio(th_on, on.get(("infercept", conc)))
                x_kv = ratio(th_on, on.get(("kvflow", conc)))
                if mult == "3x":
                    checks.append(f"- {where}, HiCache: thunder {x_ta:.2f}x `thunderagent` "
                                  f"(target >= 1.5x): {verdict(x_ta >= 1.5)}")
                checks.append(f"- {where}, HiCache: thunder {x_ic:.2f}x `infercept`, "
                              f"{x_kv:.2f}x `kvflow` (target >= 1.2x): "
                              f"{verdict(min(x_ic, x_kv) >= 1.2)}; recomputed prompt tokens "
                              f"{100 * rec:.1f}% (target <= 5%): {verdict(rec <= 0.05)}")
            ref = before.get(("thunder", conc))
            if th_off is not None and ref is not None:
                change = th_off["steps_per_min"] / ref["steps_per_min"] - 1
                same = [p for p in POLICIES if (p, conc) in before and (p, conc) in off]
                worst = min((off[(p, conc)]["steps_per_min"] / before[(p, conc)]["steps_per_min"]
                             - 1, p) for p in same)
                checks.append(f"- {where}, no HiCache: thunder {th_off['steps_per_min']:.1f} "
                              f"steps/min vs {ref['steps_per_min']:.1f} in "
                              f"`bench/results/replay/compare-{name}.md` ({100 * change:+.1f}%; "
                              f"largest change over {', '.join(same)}: {100 * worst[0]:+.1f}% "
                              f"({worst[1]}); target: not worse): {verdict(worst[0] >= -0.005)}")
    header = ("| workload, replicas, load (programs) | " + " | ".join(POLICIES)
              + " | thunder / TA (HiCache) | / infercept | / kvflow | thunder recomputed |")
    md = [
        "# HiCache: every policy on engines with and without SGLang's host tier",
        "",
        "Steps/min without / with HiCache on every engine (same sessions, seed and engine "
        "model per row; `compare-*.md` hold each run's command, wall time, load, ledger and "
        "engine time). The last columns: thunder's ratio to each comparison policy with "
        "HiCache, and thunder's recomputed prompt tokens with HiCache (the ledger's misses of "
        "every cause but first sight, % of prompt tokens).",
        "",
        "    .venv/bin/python bench/replay/hicache_summary.py",
        "",
        header,
        "|" + "---|" * (len(POLICIES) + 5),
        *rows,
        "",
        "Targets:",
        "",
        *checks,
        "",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text("\n".join(md))
    plot(plot_points, OUT / "summary.png")
    print(f"wrote {OUT / 'summary.md'}")
    return 0


def plot(points: list[tuple[str, dict[str, float], dict[str, float]]], path: Path) -> None:
    plt = pyplot(path)
    if plt is None or not points:
        return
    cols = min(4, len(points))
    rows = math.ceil(len(points) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, on, off) in zip(axes.flat, points, strict=False):
        names = [p for p in POLICIES if p in on]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [off.get(p, 0) for p in names], 0.4, label="no HiCache")
        ax.bar([x + 0.2 for x in xs], [on[p] for p in names], 0.4, label="HiCache")
        ax.set_xticks(list(xs), names, fontsize=7, rotation=35, ha="right")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("steps/min", fontsize=8)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
