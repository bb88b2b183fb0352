"""Proxy cost against a zero-work engine: direct vs proxied, side by side in one run.

What runs (all on this machine, loopback):

* ``zero_engine.py``: a raw asyncio (uvloop) HTTP server answering a fixed chat completion,
  or a fixed SSE stream (4 chunks + usage + ``[DONE]``) when the body says ``"stream":true``;
  it also answers the SGLang probes, so the real service accepts it as an SGLang engine.
* ``serve_proxy.py``: the proxy in one uvicorn worker (uvloop + httptools); mode ``service``
  is the real ``create_app`` with default settings (default policy); mode ``bare`` is the
  router alone behind a trivial ``PassThroughGate``.
* ``wrk`` (Debian package, ``apt-get install -y wrk``), one thread, ``post.lua`` for the POST
  body (about 100 bytes), as the load generator: closed loop, N connections each with one
  request in flight, for ``--duration-s`` seconds.

For each upstream client (aiohttp, httpx, raw = asyncio + httptools), streaming or not, and
each concurrency (1, 64, 256), the direct run and the proxied run go back to back, so both
see the same machine load. Reported per row:

* latency p50 / p99 direct and proxied (wrk: request sent to last response byte);
* added p50 / p99 = proxied minus direct;
* requests/s direct and proxied;
* proxy CPU per request: the proxy process's user+system CPU time over the run
  (``/proc/PID/stat``) divided by the requests it served. Unlike latency, this barely moves
  with other load on the machine, so it is the steadiest way to compare clients; 1 / it is
  the rate one core could sustain.

The highest proxied request rate is the best non-streaming requests/s over the measured
concurrencies. Everything (engine, proxy, wrk) runs at ``--nice`` (default -10 as root) so
work of other users on the machine disturbs the comparison less.

Requests are untagged by default; ``--programs N`` tags each proxied request with
``X-Thunder-Program-Id`` cycling over N programs, so the scheduling core is on the path.
The 1-minute load average at the start and end of the run is written next to the numbers.

Usage: ``.venv/bin/python bench/proxy/bench_proxy.py [--mode service] [--duration-s 5]
[--programs 64] [--suffix _programs]``
Writes ``bench/results/proxy/results<suffix>.md``, ``.json`` and ``proxy_cost<suffix>.png``
(``results_bare*`` / ``proxy_cost_bare*`` in mode ``bare``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from thunder_core.launcher import ChildProcess, launch, wait_http
from thunder_testkit import until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BODY = {"model": "zero", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    client: str
    stream: bool
    concurrency: int
    target: str  # direct | proxied
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    rps: float
    proxy_cpu_us_per_request: float | None


def _start(cmd: list[str], nice: int) -> ChildProcess:
    prefix = ["nice", "-n", str(nice)] if nice else []
    return launch(prefix + cmd, name=Path(cmd[1]).name, ready=r"listening on (http://\S+)",
                  cwd=ROOT, timeout_s=60)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _wrk(url: str, concurrency: int, duration_s: int, stream: bool, nice: int,
         programs: int = 0) -> dict[str, float]:
    body = dict(BODY, stream=True) if stream else BODY
    env = dict(os.environ, WRK_BODY=json.dumps(body, separators=(",", ":")),
               WRK_PROGRAMS=str(programs))
    prefix = ["nice", "-n", str(nice)] if nice else []
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s",
         "-s", str(HERE / "post.lua"), f"{url}/v1/chat/completions"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    """Until the proxy lists a model and answers a completion (its backend has been polled)."""
    wait_http(f"{url}/v1/models", timeout_s=timeout_s,
              accept=lambda body: bool(json.loads(body).get("data")))

    def answers() -> bool:
        try:
            return httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=5).is_success
        except httpx.HTTPError:
            return False

    until(answers, timeout_s=timeout_s, interval_s=0.5, what=f"a completion from {url}")


def _run(client: str, stream: bool, conc: int, target: str, stats: dict[str, float],
         cpu_s: float | None) -> Run:
    duration_s = stats["duration_us"] / 1e6
    requests = int(stats["requests"])
    return Run(client, stream, conc, target, requests, duration_s, int(stats["errors"]),
               stats["p50_us"] / 1000, stats["p99_us"] / 1000, requests / duration_s,
               None if cpu_s is None else cpu_s / max(requests, 1) * 1e6)


def measure(args: argparse.Namespace) -> tuple[list[Run], dict[str, float]]:
    runs: list[Run] = []
    engine = _start([sys.executable, str(HERE / "zero_engine.py")], args.nice)
    direct = engine.url
    try:
        prefix = ["nice", "-n", str(args.nice)] if args.nice else []
        client_cpu = json.loads(subprocess.run(
            [*prefix, sys.executable, str(HERE / "client_cost.py"), direct],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout)
        print(f"client CPU us/request alone: {client_cpu}", flush=True)
        for client in args.clients:
            proxy = _start([sys.executable, str(HERE / "serve_proxy.py"), "--mode",
                            args.mode, "--client", client, "--engine", direct], args.nice)
            proxied = proxy.url
            try:
                _wait_ready(proxied)
                _wrk(proxied, 64, 1, False, args.nice)  # warm-up: connections, caches
                for stream in (False, True):
                    for conc in args.concurrency:
                        stats = _wrk(direct, conc, args.duration_s, stream, args.nice)
                        runs.append(_run(client, stream, conc, "direct", stats, None))
                        before = _cpu_s(proxy.pid)
                        stats = _wrk(proxied, conc, args.duration_s, stream, args.nice,
                                     args.programs)
                        cpu = _cpu_s(proxy.pid) - before
                        runs.append(_run(client, stream, conc, "proxied", stats, cpu))
                        print(f"{client:8} stream={stream!s:5} c={conc:<4} "
                              f"direct {runs[-2].rps:8.0f}/s p50 {runs[-2].p50_ms:7.2f} ms | "
                              f"proxied {runs[-1].rps:7.0f}/s p50 {runs[-1].p50_ms:7.2f} ms "
                              f"cpu/req {runs[-1].proxy_cpu_us_per_request:6.0f} us", flush=True)
            finally:
                proxy.stop()
    finally:
        engine.stop()
    return runs, client_cpu


def _pair(runs: list[Run], client: str, stream: bool, conc: int) -> tuple[Run, Run]:
    d = next(r for r in runs if (r.client, r.stream, r.concurrency, r.target)
             == (client, stream, conc, "direct"))
    p = next(r for r in runs if (r.client, r.stream, r.concurrency, r.target)
             == (client, stream, conc, "proxied"))
    return d, p


def report(runs: list[Run], client_cpu: dict[str, float], args: argparse.Namespace,
           command: str) -> str:
    clients = list(dict.fromkeys(r.client for r in runs))
    concs = sorted({r.concurrency for r in runs})
    lines = [
        "# Proxy cost against a zero-work engine",
        "",
        f"Command: `{command}`",
        "",
        f"Mode: `{args.mode}` ("
        + ("the real `create_app` service, default settings and policy"
           if args.mode == "service" else "router alone behind a trivial PassThroughGate")
        + f"); {args.duration_s} s per run; load generator `wrk -t1` with `post.lua`"
        + (f"; proxied requests tagged with `X-Thunder-Program-Id`, cycling over "
           f"{args.programs} programs" if args.programs else "; requests untagged (no program id)")
        + f"; machine: {os.cpu_count()} cores, 1-minute load average {args.load_start:.2f} at the "
        f"start and {args.load_end:.2f} at the end (shared with other work). Latency is wrk's, "
        "request sent to last byte; added = proxied minus direct, from runs taken back to back.",
        "",
        "| client | stream | conc | direct p50 ms | proxied p50 ms | added p50 ms | "
        "direct p99 ms | proxied p99 ms | added p99 ms | direct req/s | proxied req/s | "
        "proxy CPU us/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for client in clients:
        for stream in (False, True):
            for conc in concs:
                d, p = _pair(runs, client, stream, conc)
                lines.append(
                    f"| {client} | {'yes' if stream else 'no'} | {conc} | {d.p50_ms:.2f} | "
                    f"{p.p50_ms:.2f} | {p.p50_ms - d.p50_ms:.2f} | {d.p99_ms:.2f} | "
                    f"{p.p99_ms:.2f} | {p.p99_ms - d.p99_ms:.2f} | {d.rps:,.0f} | {p.rps:,.0f} | "
                    f"{p.proxy_cpu_us_per_request:.0f} | {p.errors} |"
                )
    lines += [
        "",
        "## Upstream clients alone",
        "",
        "`client_cost.py`: each client POSTing to the zero-work engine with 16 requests in "
        "flight, no proxy around it; process CPU per request, minimum of 5 interleaved rounds "
        "(the estimate least disturbed by other work on the machine).",
        "",
        "| client | CPU us/request | vs best |",
        "|---|---|---|",
    ]
    fastest = min(client_cpu.values())
    for name, cost in sorted(client_cpu.items(), key=lambda item: item[1]):
        lines.append(f"| {name} | {cost:.0f} | {cost / fastest:.1f}x |")
    lines += ["", "## Summary", ""]
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for client in clients:
        proxied = [r for r in runs if r.client == client and r.target == "proxied"]
        best[client] = max(r.rps for r in proxied if not r.stream)
        nonstream = [r for r in proxied if not r.stream and r.concurrency > 1]
        cpu[client] = sum(r.proxy_cpu_us_per_request or 0 for r in nonstream) / len(nonstream)
        d1, p1 = _pair(runs, client, False, concs[0])
        lines.append(
            f"- **{client}**: highest proxied rate {best[client]:,.0f} non-streaming req/s; "
            f"added p50 at concurrency {concs[0]} {p1.p50_ms - d1.p50_ms:.2f} ms; proxy CPU "
            f"{cpu[client]:.0f} us per non-streaming request under load (about "
            f"{1e6 / cpu[client]:,.0f} req/s per core)."
        )
    if len(clients) >= 2:
        # judged by proxy CPU per request: it moves far less with other load than the rates
        win = min(clients, key=lambda name: cpu[name])
        others = "; ".join(
            f"{cpu[lose] / cpu[win]:.2f}x less proxy CPU per request than {lose}, highest "
            f"rate {best[win] / best[lose]:.2f}x {lose}'s"
            for lose in clients if lose != win
        )
        lines.append(f"- Lowest proxy CPU per request: **{win}**: {others}.")
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = list(dict.fromkeys(r.client for r in runs))
    concs = sorted({r.concurrency for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(clients) + 1)
    for stream, style in ((False, ""), (True, "//")):
        for i, name in enumerate(["direct", *clients]):
            rates = []
            for conc in concs:
                client = clients[0] if name == "direct" else name
                d, p = _pair(runs, client, stream, conc)
                rates.append((d if name == "direct" else p).rps)
            offs = [c + (i - len(clients) / 2) * width
                    for c in range(len(concs))]
            ax = axes[0 if not stream else 1]
            ax.bar(offs, rates, width, label=name, hatch=style)
    for ax, title in zip(axes, ("non-streaming", "streaming"), strict=True):
        ax.set_xticks(range(len(concs)), [f"c={c}" for c in concs])
        ax.set_yscale("log")
        ax.set_ylabel("requests/s (log)")
        ax.set_title(f"zero-work engine, {title}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["service", "bare"], default="service")
    parser.add_argument("--clients", nargs="+", default=["aiohttp", "httpx", "raw"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 64, 256])
    parser.add_argument("--duration-s", type=int, default=5)
    parser.add_argument("--programs", type=int, default=0,
                        help="proxied requests carry X-Thunder-Program-Id, cycling over this "
                             "many programs (0: untagged, the default)")
    parser.add_argument("--suffix", default="",
                        help="appended to the output file names (results<suffix>.md, ...)")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "proxy")
    args = parser.parse_args()
    command = "python bench/proxy/bench_proxy.py " + " ".join(sys.argv[1:])
    args.load_start = os.getloadavg()[0]
    runs, client_cpu = measure(args)
    args.load_end = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("results" if args.mode == "service" else "results_bare") + args.suffix
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"runs": [asdict(r) for r in runs], "client_cpu_us_per_request": client_cpu}, indent=1))
    (args.out / f"{stem}.md").write_text(report(runs, client_cpu, args, command.strip()))
    plot(runs, args.out / f"proxy_cost{'' if args.mode == 'service' else '_bare'}{args.suffix}.png")
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
