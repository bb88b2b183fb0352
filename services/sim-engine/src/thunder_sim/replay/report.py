"""Replay reports: a Markdown table, a JSON dump and PNG plots of a set of runs.

``write(reports, out_dir, name, preamble)`` writes ``<name>.md`` (the command, the fit and gap
choices, then one row per run, then the recompute ledger: each run's missed prompt tokens by
cause as a share of its prompt tokens), ``<name>.json`` (every field of every run), when the
runs span more than one concurrency ``<name>.png`` (steps per minute and KV hit rate against
the number of concurrent programs, one line per policy, the ideal hit rate dashed), and when
any run has a ledger ``<name>-ledger.png``: one panel per number of programs, one stacked bar
per policy whose height is ``1 - hit rate`` split by cause.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thunder_sim.engine.ledger import MissCause
from thunder_sim.replay.metrics import RunReport

log = logging.getLogger(__name__)

CAUSE_TITLES: dict[str, str] = {
    MissCause.FIRST_SIGHT: "first sight",
    MissCause.EVICTED_ACTING: "evicted acting",
    MissCause.EVICTED_PAUSED: "evicted paused",
    MissCause.FORCED_RESTORE: "forced restore",
    MissCause.MOVED: "moved",
    MissCause.OVER_ADMISSION: "over-admission",
    MissCause.RETRACTION: "retraction",
    MissCause.OWNER_GONE: "owner gone",
    MissCause.EVICTED_AWAY: "evicted away",
}

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
    ("ftr_p50_s", "FTR p50 s"),
    ("ftr_p90_s", "FTR p90 s"),
    ("session_p50_s", "session p50 s"),
    ("pauses", "pauses"),
    ("migrations", "migrations"),
    ("max_paused_s", "max paused s"),
    ("max_paused_share", "max paused share"),
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


def ledger_causes(reports: Sequence[RunReport]) -> list[str]:
    """The causes to show: every ``MissCause`` some run has (in enum order), then others."""
    present = [c.value for c in MissCause if any(r.miss_tokens.get(c.value) for r in reports)]
    extra = sorted({k for r in reports for k, v in r.miss_tokens.items()
                    if v and k not in present})
    return present + extra


def ledger_table(reports: Sequence[RunReport]) -> str:
    """Missed prompt tokens by cause, as % of each run's prompt tokens ('' with no ledger)."""
    rows_of = [r for r in reports if r.miss_tokens]
    causes = ledger_causes(rows_of)
    if not rows_of or not causes:
        return ""
    head = ("| policy | replicas | programs | missed tokens | miss % | "
            + " | ".join(CAUSE_TITLES.get(c, c) for c in causes) + " |")
    rule = "|" + "|".join("---" for _ in range(5 + len(causes))) + "|"
    rows = []
    for r in rows_of:
        missed = sum(r.miss_tokens.values())
        shares = [f"{100 * r.miss_tokens.get(c, 0) / r.prompt_tokens:.1f}"
                  if r.prompt_tokens else "-" for c in causes]
        rows.append(f"| {r.policy} | {r.replicas} | {r.concurrency} | {missed:,} | "
                    f"{100 * missed / r.prompt_tokens if r.prompt_tokens else math.nan:.1f} | "
                    + " | ".join(shares) + " |")
    return "\n".join([head, rule, *rows])


def pyplot(path: Path) -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None (with a warning naming ``path``, the
    plot not drawn) when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("no plot %s: matplotlib is not installed (pip install 'thunder-sim[plots]')",
                    path)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def engine_time_table(reports: Sequence[RunReport]) -> str:
    """Where the engines' time went (``virtual.engine_time``); '' when no run has it."""
    rows_of = [r for r in reports if "decode_share" in r.extra]
    if not rows_of:
        return ""
    head = ("| policy | replicas | programs | prefill % | decode % | idle % | mean decode batch "
            "| context per decoding request |")
    rule = "|---|---|---|---|---|---|---|---|"
    rows = [f"| {r.policy} | {r.replicas} | {r.concurrency} | "
            f"{100 * r.extra['prefill_share']:.1f} | {100 * r.extra['decode_share']:.1f} | "
            f"{100 * r.extra['idle_share']:.1f} | {r.extra['decode_batch_mean']:.1f} | "
            f"{r.extra['decode_context_per_request']:,} |" for r in rows_of]
    return "\n".join([head, rule, *rows])


def plot_ledger(reports: Sequence[RunReport], path: Path, title: str) -> bool:
    """Stacked bars of missed prompt tokens by cause (share of prompt tokens), one bar per
    policy, one panel per (replicas, programs); False (no file) without a ledger."""
    runs = [r for r in reports if r.miss_tokens and r.prompt_tokens]
    causes = ledger_causes(runs)
    if not runs or not causes:
        return False
    plt = pyplot(path)
    if plt is None:
        return False

    panels = sorted({(r.replicas, r.concurrency) for r in runs})
    policies = list(dict.fromkeys(r.policy for r in runs))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 3.2 * len(panels)), 4.4),
                             sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (replicas, programs) in zip(axes[0], panels, strict=True):
        by = {r.policy: r for r in runs if (r.replicas, r.concurrency) == (replicas, programs)}
        xs = list(range(len(policies)))
        bottom = [0.0] * len(policies)
        for k, cause in enumerate(causes):
            heights = [by[p].miss_tokens.get(cause, 0) / by[p].prompt_tokens if p in by else 0.0
                       for p in policies]
            slot = list(CAUSE_TITLES).index(cause) if cause in CAUSE_TITLES else k
            ax.bar(xs, heights, bottom=bottom, color=colors(slot % 10),
                   label=CAUSE_TITLES.get(cause, cause))
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(xs, policies, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{replicas} replicas, {programs} programs", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("missed prompt tokens / prompt tokens (= 1 - hit rate)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{title}: recompute ledger", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


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
    plt = pyplot(path)
    if plt is None:
        return False

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
    ledger = ledger_table(reports)
    if ledger:
        parts += ["", "Recompute ledger: missed prompt tokens (prompt - cached, completed steps) "
                  "by cause, % of prompt tokens; the causes add up to `miss %` = 100 x "
                  "(1 - hit rate) (definitions: `thunder_sim/engine/ledger.py`):", "", ledger]
    engine_time = engine_time_table(reports)
    if engine_time:
        parts += ["", "Engine time: shares of engine-seconds in prefill, decode and idle; the "
                  "time-weighted mean decode batch per engine and the mean context of a decoding "
                  "request (a decode iteration reads every running request's KV, so its cost "
                  "per output token is about (weights + batch context) / batch):", "",
                  engine_time]
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
    ledger_png = out_dir / f"{name}-ledger.png"
    if plot_ledger(reports, ledger_png, name):
        written.append(ledger_png)
    return written
