"""Soak: 1,000 concurrent agent programs against simulated engines; errors and scheduler memory.

What runs (all on this machine, loopback, real processes):

* ``--engines`` ``thunder-sim serve`` processes (simulated SGLang H100s, ``--time-scale``);
* ``thunder-scheduler serve`` with them as backends (default policy, and ``--state-file`` when
  ``--persist`` is given);
* this script's load generator: ``--programs`` concurrent program loops in one asyncio
  process. Each loop starts a program (lifecycle API), then runs ``--steps-min`` to
  ``--steps-max`` steps of one chat completion (its context grows every step) and one tool call
  (tool start, ``--tool-s`` seconds of think/tool time, tool end), then ends the program and
  starts the next one under a new id, until ``--duration-s`` is over. So the program table
  churns the whole time: thousands of programs start and end.

Every ``--sample-s`` seconds the scheduler's resident memory (``VmRSS`` of its process) is
sampled. Reported: requests and lifecycle calls made, errors (any non-2xx answer or transport
error; target 0), programs started / ended, and memory: the mean RSS of the first sampled minute
after ``--warmup-s`` and of the last minute, their change, and the range of all samples after
warm-up relative to the first post-warm-up minute (target: flat within 10%).

Usage: ``nice .venv/bin/python bench/soak/bench_soak.py [--programs 1000] [--duration-s 600]``
Writes ``bench/results/soak/README.md``, ``soak.json`` and ``memory.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from thunder_core.contract import PROGRAM_ID_HEADER, EnginePaths, Paths
from thunder_core.launcher import ChildProcess, launch, stop_all

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen3-8B"  # what the h100-qwen3-8b preset serves
ADMIN = "soak-admin"


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Load:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        self.requests = 0
        self.lifecycle_calls = 0
        self.errors: dict[str, int] = {}
        self.started = 0
        self.ended = 0
        self.stop_at = 0.0
        self._rng = random.Random(7)

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def _call(self, http: httpx.AsyncClient, what: str, path: str, body: dict[str, Any],
                    headers: dict[str, str]) -> bool:
        try:
            response = await http.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self._error(f"{what}: {type(exc).__name__}")
            return False
        if what == "chat":
            self.requests += 1
        else:
            self.lifecycle_calls += 1
        if response.status_code >= 300:
            self._error(f"{what}: {response.status_code} {response.text[:80]}")
            return False
        return True

    async def program_loop(self, http: httpx.AsyncClient, slot: int) -> None:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        generation = 0
        await asyncio.sleep(self._rng.uniform(0, self.args.tool_s))  # spread the starts
        while time.monotonic() < self.stop_at:
            pid = f"soak-{slot}-{generation}"
            generation += 1
            if not await self._call(http, "start", Paths.PROGRAMS, {"program_id": pid}, admin):
                await asyncio.sleep(1.0)
                continue
            self.started += 1
            messages = [{"role": "system", "content": "You are a coding agent. " * 20}]
            steps = self._rng.randint(self.args.steps_min, self.args.steps_max)
            for step in range(steps):
                if time.monotonic() >= self.stop_at:
                    break
                messages.append({"role": "user", "content": f"step {step}: " + "run tests " * 30})
                body = {"model": MODEL, "messages": messages, "max_tokens": self.args.max_tokens}
                await self._call(http, "chat", EnginePaths.CHAT_COMPLETIONS, body,
                                 {PROGRAM_ID_HEADER: pid})
                messages.append({"role": "assistant", "content": "ok " * self.args.max_tokens})
                call = f"c{step}"
                await self._call(http, "tool_start", Paths.TOOLS.format(program_id=pid),
                                 {"call_id": call, "tool_name": "bash"}, admin)
                await asyncio.sleep(self._rng.uniform(0.5, 1.5) * self.args.tool_s)
                end = Paths.TOOL_END.format(program_id=pid, call_id=call)
                await self._call(http, "tool_end", end, {}, admin)
            if await self._call(http, "end", Paths.PROGRAM_END.format(program_id=pid), {}, admin):
                self.ended += 1


async def _run_load(url: str, args: argparse.Namespace, scheduler_pid: int,
                    samples: list[tuple[float, int, int, int]]) -> Load:
    load = Load(url, args)
    # keep-alive expiry below the server's 5 s (uvicorn's timeout_keep_alive), so the client
    # never sends on a connection the server is closing (a read error, not the server's fault)
    limits = httpx.Limits(max_connections=args.programs + 16,
                          max_keepalive_connections=args.programs + 16, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0),
                                 limits=limits) as http:
        t0 = time.monotonic()
        load.stop_at = t0 + args.duration_s
        loops = [asyncio.create_task(load.program_loop(http, i)) for i in range(args.programs)]

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - t0, _rss_bytes(scheduler_pid),
                                load.requests, sum(load.errors.values())))
                await asyncio.sleep(args.sample_s)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*loops)
        sampler.cancel()
        samples.append((time.monotonic() - t0, _rss_bytes(scheduler_pid), load.requests,
                        sum(load.errors.values())))
    return load


def _plot(samples: list[tuple[float, int, int, int]], warmup_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in samples]
    rss = [s[1] / 2**20 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, rss, label="scheduler RSS")
    ax.axvline(warmup_s, color="grey", linestyle="--", label="end of warm-up")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(0, max(rss) * 1.2)
    ax.set_title("thunder-scheduler memory, 1,000 concurrent programs (soak)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=20.0)
    parser.add_argument("--steps-min", type=int, default=3)
    parser.add_argument("--steps-max", type=int, default=12)
    parser.add_argument("--tool-s", type=float, default=8.0,
                        help="mean tool/think time between two LLM calls of a program")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--persist", action="store_true", help="run with --state-file")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak")
    args = parser.parse_args()
    command = "nice .venv/bin/python bench/soak/bench_soak.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
        for k, v in vars(args).items() if k != "out" and v is not False)
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    children: list[ChildProcess] = []
    samples: list[tuple[float, int, int, int]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    state = args.out / ".soak-state.sqlite3"
    try:
        urls = []
        for i in range(args.engines):
            engine = ChildProcess(
                [sys.executable, "-m", "thunder_sim", "serve", "--host", "127.0.0.1",
                 "--port", "0", "--time-scale", str(args.time_scale), "--log-level", "warning"],
                name=f"sim{i}", ready=r"thunder-sim ready: (http://\S+)")
            children.append(engine)
            urls.append(engine.wait_ready(60))
        cmd = [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1",
               "--port", "0", "--admin-key", ADMIN, "--log-level", "warning"]
        for i, url in enumerate(urls):
            cmd += ["--backend", f"sim{i}@sglang={url}"]
        if args.persist:
            cmd += ["--state-file", str(state)]
        scheduler = launch(cmd, name="thunder-scheduler", ready=r"listening on (http://\S+)",
                           health=Paths.READY, timeout_s=60)  # /ready: its engines polled
        children.append(scheduler)
        load = asyncio.run(_run_load(scheduler.url, args, scheduler.process.pid, samples))
        final = httpx.get(f"{scheduler.url}{Paths.PROGRAMS}", timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN}"}).json()["programs"]
        live_left = sum(1 for p in final if p["status"] != "terminated")
        scheduler_log_tail = scheduler.output()[-2000:]
    finally:
        stop_all(children, 10)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
    load_end = " ".join(f"{v:.2f}" for v in os.getloadavg())

    after = [s for s in samples if s[0] >= args.warmup_s]
    first_min = [s[1] for s in after if s[0] < args.warmup_s + 60]
    last_min = [s[1] for s in after if s[0] >= samples[-1][0] - 60]
    base = statistics.mean(first_min)
    end = statistics.mean(last_min)
    spread = (max(s[1] for s in after) - min(s[1] for s in after)) / base
    change = end / base - 1
    errors = sum(load.errors.values())
    _plot(samples, args.warmup_s, args.out / "memory.png")
    result = {
        "command": command, "load_start": load_start, "load_end": load_end,
        "requests": load.requests, "lifecycle_calls": load.lifecycle_calls, "errors": errors,
        "error_kinds": load.errors, "programs_started": load.started,
        "programs_ended": load.ended, "live_programs_left": live_left,
        "rss_after_warmup_mib": base / 2**20, "rss_last_minute_mib": end / 2**20,
        "rss_change": change, "rss_spread_after_warmup": spread,
        "samples": samples,
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    flat = abs(change) <= 0.10 and spread <= 0.10
    lines = [
        "# Soak: 1,000 concurrent programs against simulated engines",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} cores shared with other work; load average (1/5/15 min) "
        f"{load_start} at the start, {load_end} at the end. {args.engines} `thunder-sim serve` "
        f"engines (h100-qwen3-8b, time scale {args.time_scale}), one `thunder-scheduler serve` "
        f"(default policy{', --state-file' if args.persist else ''}), {args.programs} program "
        f"loops in one load process for {args.duration_s:.0f} s: each program runs "
        f"{args.steps_min}-{args.steps_max} steps of a chat completion (growing context, "
        f"max_tokens {args.max_tokens}) and a tool call of ~{args.tool_s:.0f} s, then ends, and "
        "its loop starts the next program.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| chat completions | {load.requests:,} ({load.requests / args.duration_s:.0f}/s) | |",
        f"| lifecycle calls | {load.lifecycle_calls:,} | |",
        f"| programs started / ended | {load.started:,} / {load.ended:,} | |",
        f"| live programs left at the end | {live_left} | |",
        f"| errors (non-2xx or transport) | **{errors}** | 0 |",
        f"| scheduler RSS, first minute after {args.warmup_s:.0f} s warm-up | "
        f"{base / 2**20:.1f} MiB | |",
        f"| scheduler RSS, last minute | {end / 2**20:.1f} MiB | |",
        f"| change | **{change * 100:+.1f}%** | within 10% |",
        f"| range of all samples after warm-up | {spread * 100:.1f}% of the first minute | "
        "within 10% |",
        "",
        f"Result: errors {'0 (met)' if errors == 0 else f'{errors} (missed)'}; memory "
        f"{'flat within 10% (met)' if flat else 'not flat within 10% (missed)'}.",
        "",
        "![scheduler memory over time](memory.png)",
        "",
    ]
    if errors:
        lines += ["Errors by kind:", "", *[f"- {k}: {v}" for k, v in load.errors.items()], ""]
    (args.out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if errors:
        print(scheduler_log_tail)


if __name__ == "__main__":
    main()
