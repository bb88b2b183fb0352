"""Replay reports: a Markdown table, a JSON dump and PNG plots of a set of runs.

``write(reports, out_dir, name, preamble)`` writes ``<name>.md`` (the command, the fit and gap
choices, then one row per run), ``<name>.json`` (every field of every run) and, when the runs
span more than one concurrency, ``<name>.png``: steps per minute and KV hit rate against the
number of concurrent programs, one line per policy (and the ideal hit rate dashed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from thunder_sim.replay.metrics import RunReport

log = logging.getLogger(__name__)

COLUMNS: tuple[tuple[str, str], ...] = (
    ("policy", "policy"),
    ("replicas", "replicas"),
    ("concurrency", "programs"),
    ("steps", "steps"),
    ("steps_per_min", "steps/min"),
    ("output_tokens_per_s", "out tok/s"),
    ("hit_rate", "hit rate"),
    ("ideal_hit_rate", "ideal"),
    ("recomputed_tokens", "recomputed"),
    ("step_latency_p50_s", "step p50 s"),
    ("step_latency_p99_s", "step p99 s"),
    ("ttft_p50_s", "TTFT p50 s"),
    ("ttft_p99_s", "TTFT p99 s"),
    ("pauses", "pauses"),
    ("migrations", "migrations"),
    ("max_paused_s", "max paused s"),
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) < 1.5:
            return f"{value:.3f}"
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(reports: Sequence[RunReport]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(_fmt(getattr(r, key)) for key, _ in COLUMNS) + " |"
            for r in reports]
    return "\n".join([head, rule, *rows])


def ratios(reports: Sequence[RunReport], baseline: str) -> str:
    """Steps/min of every policy over ``baseline``'s at the same replicas and concurrency."""
    base = {(r.replicas, r.concurrency): r for r in reports if r.policy == baseline}
    lines = []
    for r in reports:
        b = base.get((r.replicas, r.concurrency))
        if r.policy == baseline or b is None or not b.steps_per_min:
            continue
        lines.append(
            f"- {r.policy} vs {baseline}, {r.replicas} replicas, {r.concurrency} programs: "
            f"{r.steps_per_min / b.steps_per_min:.2f}x steps/min, hit rate "
            f"{_fmt(r.hit_rate)} vs {_fmt(b.hit_rate)}"
        )
    return "\n".join(lines)


def plot(reports: Sequence[RunReport], path: Path, title: str) -> bool:
    """Steps/min and hit rate vs concurrency; False (no file) if there is nothing to draw."""
    if len({r.concurrency for r in reports}) < 2:
        return False
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("no plot %s: matplotlib is not installed (pip install 'thunder-sim[plots]')",
                    path)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = sorted({(r.policy, r.replicas) for r in reports})
    for policy, replicas in series:
        rows = sorted((r for r in reports if (r.policy, r.replicas) == (policy, replicas)),
                      key=lambda r: r.concurrency)
        xs = [r.concurrency for r in rows]
        label = f"{policy} ({replicas} replicas)" if len({s[1] for s in series}) > 1 else policy
        ax1.plot(xs, [r.steps_per_min for r in rows], marker="o", label=label)
        ax2.plot(xs, [r.hit_rate for r in rows], marker="o", label=label)
    ideal = sorted({(r.concurrency, r.ideal_hit_rate) for r in reports})
    if ideal:
        ax2.plot([c for c, _ in ideal], [v for _, v in ideal], "k--", lw=1, label="ideal")
    ax1.set_xlabel("concurrent programs")
    ax1.set_ylabel("agent steps / minute")
    ax2.set_xlabel("concurrent programs")
    ax2.set_ylabel("KV hit rate (token-weighted)")
    ax2.set_ylim(0, 1.02)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(
    reports: Sequence[RunReport], out_dir: Path, name: str, preamble: str,
    baseline: str | None = None,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{name}.md"
    parts = [f"# Replay: {name}", "", preamble.strip(), "", table(reports)]
    if baseline is not None:
        rel = ratios(reports, baseline)
        if rel:
            parts += ["", f"Ratios against `{baseline}`:", "", rel]
    md.write_text("\n".join(parts) + "\n")
    js = out_dir / f"{name}.json"
    js.write_text(json.dumps([r.as_dict() for r in reports], indent=1, default=str) + "\n")
    written = [md, js]
    png = out_dir / f"{name}.png"
    if plot(reports, png, name):
        written.append(png)
    return written
