"""Can one ``thunder-sim serve`` keep up with N agent programs at a time scale? (live mode)

For each prompt kind (``trace``: the replay's ``thunder_trace`` block ids; ``text``: real chat
messages) and each number of programs, it starts a fresh ``thunder-sim serve --time-scale S``
process, drives it with ``load.py`` (a separate process: a closed loop of streaming chat
completions, 200 output tokens, growing contexts, short tool gaps) and, in a third process, a
probe that only sleeps 5 ms and measures how late it wakes: the machine's own scheduling noise,
which the server suffers too. After ``--warmup-s`` (the start-up burst: every program sends its
first prompt at once) it scrapes the server's ``/metrics``, again ``--duration-s`` later, and
reports over that window:

- lost step time: ``thunder_sim_lost_step_wall_seconds`` / ``planned_step_wall_seconds`` (the
  share of modelled GPU time that idled because the engine loop fell more than 20 ms behind);
  the instrument is faithful below 10% (the server's own warning threshold);
- engine-loop lag p50 / p99: lateness of the loop's wake-ups against plan, from the
  ``thunder_sim_engine_wakeup_lateness_seconds`` histogram (linear inside a bucket, as
  Prometheus' ``histogram_quantile``);
- requests/s and output tokens/s (wall), from ``sglang:num_requests_total`` and
  ``sglang:generation_tokens_total``;
- the server's CPU use (share of one core, from ``/proc/PID/stat``), the client's own loop lag
  p99, the noise probe's p99 and the 1-minute load average, to tell a slow server from a busy
  machine.

``--scales`` re-runs the largest program count at other time scales to find the highest one
that stays under 10% lost. The machine is shared, so every configuration runs ``--repeats``
times, interleaved (round-robin over configurations, so a busy minute hits all of them), and
the table gives the median run (by lost share) with the range of lost shares. Writes
``live_capacity.md`` and ``live_capacity.png`` to ``--out``.

    .venv/bin/python bench/sim_server/bench_live_capacity.py          # defaults as committed
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from thunder_core.launcher import ChildProcess, launch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
READY_RE = re.compile(r"thunder-sim ready: (http://\S+)")
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})? ([-+\w.]+)$')
LE_RE = re.compile(r'le="([^"]+)"')
MAX_LOST_SHARE = 0.10   # the server's own distortion threshold (thunder_sim.server.lag)

PROBE = """
import sys, time
lat = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t = time.monotonic(); time.sleep(0.005); lat.append(time.monotonic() - t - 0.005)
lat.sort()
print(lat[len(lat) // 2], lat[len(lat) * 99 // 100])
"""


@dataclass
class Row:
    prompt: str
    programs: int
    time_scale: float
    end_time_scale: float
    lost_share: float
    lag_p50_ms: float
    lag_p99_ms: float
    requests_per_s: float
    tokens_per_s: float
    client_lag_p99_ms: float
    probe_p99_ms: float
    load_avg: float
    server_cpu: float
    errors: int
    unfinished: int
    lost_range: tuple[float, float] = (0.0, 0.0)
    repeats: int = 1


def scrape(url: str) -> dict[str, float]:
    """Sum of every sample by name (labels dropped), buckets keyed ``name{le}``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        if name.endswith("_bucket") and labels:
            le = LE_RE.search(labels)
            name = f"{name}{{{le.group(1) if le else ''}}}"
        out[name] = out.get(name, 0.0) + float(value)
    return out


def hist_quantile(before: dict[str, float], after: dict[str, float], base: str,
                  q: float) -> float:
    bounds: list[tuple[float, float]] = []
    for key, v in after.items():
        if key.startswith(base + "_bucket{"):
            label = key[len(base) + 8:-1]
            bounds.append((float("inf") if label == "+Inf" else float(label),
                           v - before.get(key, 0)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, prev = q * total, 0.0, 0.0
    for upper, cum in bounds:
        if cum >= rank:
            if upper == float("inf"):
                return lower
            frac = (rank - prev) / (cum - prev) if cum > prev else 1.0
            return lower + (upper - lower) * frac
        lower, prev = upper, cum
    return lower


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(args: argparse.Namespace, scale: float, log: Path) -> ChildProcess:
    cmd = [sys.executable, "-m", "thunder_sim", "serve", "--port", "0", "--time-scale",
           str(scale), "--log-level", "info", *shlex.split(args.server_args)]
    return launch(cmd, name="thunder-sim serve", ready=READY_RE, log=log, timeout_s=120)


def run_one(args: argparse.Namespace, prompt: str, programs: int, scale: float,
            tmp: Path) -> Row:
    log = tmp / f"serve-{prompt}-{programs}-{scale:g}.log"
    server = start_server(args, scale, log)
    url = server.url
    try:
        total_s = args.warmup_s + args.duration_s
        client = subprocess.Popen(
            [sys.executable, str(HERE / "load.py"), "--url", url, "--programs", str(programs),
             "--prompt", prompt, "--duration-s", str(total_s), "--drain-s", "20",
             "--time-scale", str(scale)], stdout=subprocess.PIPE, text=True)
        time.sleep(args.warmup_s)
        before = scrape(url)
        cpu0 = cpu_s(server.pid)
        t0 = time.monotonic()
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(args.duration_s)],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(args.duration_s)
        after = scrape(url)
        window_s = time.monotonic() - t0
        server_cpu = (cpu_s(server.pid) - cpu0) / window_s
        load_avg = os.getloadavg()[0]
        out, _ = client.communicate(timeout=total_s + 120)
        probe_out, _ = probe.communicate(timeout=60)
    finally:
        server.stop(30)
    summary = orjson.loads(out.strip().splitlines()[-1])

    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    planned = d("thunder_sim_planned_step_wall_seconds_total")
    lat = "thunder_sim_engine_wakeup_lateness_seconds"
    row = Row(
        prompt=prompt, programs=programs, time_scale=scale,
        end_time_scale=after.get("thunder_sim_time_scale", scale),
        lost_share=d("thunder_sim_lost_step_wall_seconds_total") / planned if planned else 0.0,
        lag_p50_ms=1000 * hist_quantile(before, after, lat, 0.50),
        lag_p99_ms=1000 * hist_quantile(before, after, lat, 0.99),
        requests_per_s=d("sglang:num_requests_total") / window_s,
        tokens_per_s=d("sglang:generation_tokens_total") / window_s,
        client_lag_p99_ms=1000 * summary["client_lag_p99_s"],
        probe_p99_ms=1000 * float(probe_out.split()[1]),
        load_avg=load_avg, server_cpu=server_cpu, errors=int(summary["errors"]),
        unfinished=int(summary["unfinished_at_drain"]))
    print(f"{prompt:5s} N={programs:3d} scale={scale:g}: lost {100 * row.lost_share:.1f}% "
          f"lag p50/p99 {row.lag_p50_ms:.1f}/{row.lag_p99_ms:.1f} ms "
          f"{row.requests_per_s:.0f} req/s {row.tokens_per_s:.0f} tok/s "
          f"(server CPU {100 * row.server_cpu:.0f}%, client p99 {row.client_lag_p99_ms:.0f} ms, "
          f"probe p99 {row.probe_p99_ms:.1f} ms, "
          f"load {row.load_avg:.1f}, errors {row.errors}, unfinished {row.unfinished})",
          flush=True)
    return row


def median_row(rs: list[Row]) -> Row:
    ordered = sorted(rs, key=lambda r: r.lost_share)
    mid = ordered[(len(ordered) - 1) // 2]
    mid.lost_range = (ordered[0].lost_share, ordered[-1].lost_share)
    mid.repeats = len(rs)
    mid.errors = sum(r.errors for r in rs)
    mid.unfinished = sum(r.unfinished for r in rs)
    return mid


def table(rows: list[Row]) -> str:
    head = ("| prompt | programs | time scale | lost step time | loop lag p50 | loop lag p99 | "
            "requests/s | output tokens/s | server CPU | client lag p99 | machine noise p99 | "
            "load avg | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r.prompt} | {r.programs} | {r.time_scale:g}"
        + (f" (ended {r.end_time_scale:.2f})" if r.end_time_scale != r.time_scale else "")
        + f" | **{100 * r.lost_share:.1f}%** ({100 * r.lost_range[0]:.1f}-"
        f"{100 * r.lost_range[1]:.1f}%, {r.repeats} runs) | {r.lag_p50_ms:.1f} ms | "
        f"{r.lag_p99_ms:.1f} ms | "
        f"{r.requests_per_s:.1f} | {r.tokens_per_s:,.0f} | {100 * r.server_cpu:.0f}% | "
        f"{r.client_lag_p99_ms:.0f} ms | "
        f"{r.probe_p99_ms:.1f} ms | {r.load_avg:.1f} | {r.errors + r.unfinished} |"
        for r in rows]
    return head + "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, scale: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for prompt, marker in (("trace", "o"), ("text", "s")):
        rs = [r for r in rows if r.prompt == prompt and r.time_scale == scale]
        if not rs:
            continue
        xs = [r.programs for r in rs]
        axes[0].plot(xs, [100 * r.lost_share for r in rs], marker=marker, label=prompt)
        axes[1].plot(xs, [r.lag_p99_ms for r in rs], marker=marker, label=f"{prompt} p99")
        axes[1].plot(xs, [r.lag_p50_ms for r in rs], marker=marker, ls=":",
                     label=f"{prompt} p50")
        axes[2].plot(xs, [r.tokens_per_s for r in rs], marker=marker, label=prompt)
    axes[0].axhline(100 * MAX_LOST_SHARE, color="red", ls="--", label="10% threshold")
    axes[0].set(title=f"lost step time at scale {scale:g}", xlabel="concurrent programs",
                ylabel="% of planned step time")
    axes[1].set(title="engine-loop lag", xlabel="concurrent programs", ylabel="wall ms")
    axes[2].set(title="output tokens/s (wall)", xlabel="concurrent programs")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--programs", default="64,128,256")
    p.add_argument("--prompts", default="trace,text")
    p.add_argument("--time-scale", type=float, default=20.0)
    p.add_argument("--scales", default="", help="extra scales for the largest program count, "
                   "e.g. 10,5 (trace prompts)")
    p.add_argument("--warmup-s", type=float, default=6.0)
    p.add_argument("--duration-s", type=float, default=15.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--server-args", default="", help="extra thunder-sim serve flags")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sim_server")
    args = p.parse_args()
    programs = [int(x) for x in args.programs.split(",")]
    prompts = args.prompts.split(",")
    configs = [(prompt, n, args.time_scale) for prompt in prompts for n in programs]
    configs += [("trace", max(programs), float(s)) for s in args.scales.split(",") if s]
    runs: dict[tuple[str, int, float], list[Row]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="sim-capacity-") as tmp:
        for _ in range(args.repeats):
            for c in configs:
                runs[c].append(run_one(args, *c, Path(tmp)))
    rows = [median_row(rs) for rs in runs.values()]
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/sim_server/bench_live_capacity.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    md = [
        "# thunder-sim serve: live capacity", "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work "
        f"(load average in the table), Python {platform.python_version()}; server, load client "
        "and noise probe are three processes on the same cores.", "",
        f"Window: {args.duration_s:g} s after a {args.warmup_s:g} s warm-up; preset "
        "h100-qwen3-8b; each program streams chat completions of 200 output tokens, contexts "
        "from 2.1k tokens (2,048 shared) growing by the output plus a 64-1,024-token tool "
        "result to 16k, tool gaps U[0.5, 3] modelled seconds.", "",
        table(rows), "",
        "Each row is the median of its runs by lost share (the other columns are that run's); "
        "the range of lost shares over all runs is in brackets. Runs were interleaved.", "",
        f"Lost step time: modelled GPU time skipped because the engine loop fell > 20 ms "
        f"behind; results are faithful below {100 * MAX_LOST_SHARE:.0f}%. Loop lag: lateness "
        "of the loop's wake-ups. Server CPU: share of one core the server process used in the "
        "window. Machine noise: a process that only sleeps 5 ms, same window.",
    ]
    (args.out / "live_capacity.md").write_text("\n".join(md) + "\n")
    plot(rows, args.out / "live_capacity.png", args.time_scale)
    print(f"wrote {args.out / 'live_capacity.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
