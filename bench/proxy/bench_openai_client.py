"""What an agent client sees: the official ``openai`` client over kept-alive connections,
direct to a zero-work engine vs through the real ``thunder-scheduler serve`` process.

wrk (``bench_proxy.py``) pipelines nothing and opens its connections once, but it writes each
request in one segment and reads responses as they come, so it never met the delayed-ACK stall
that a client such as the ``openai`` SDK (httpx, one kept-alive connection, request head and
body in separate writes) meets when a server's accepted sockets lack ``TCP_NODELAY``. This
benchmark measures exactly that path:

* ``zero_engine.py`` as the engine (fixed answers, no inference);
* the scheduler started as a user starts it, ``thunder-scheduler serve --port 0 --backend
  sglang=ENGINE`` (its own listening socket, default settings and policy);
* one ``openai.OpenAI`` client per target (``max_retries=0``), so one kept-alive connection
  each; ``--requests`` chat completions with ``max_tokens: 1``, non-streaming, then the same
  streaming (the stream read to its end), alternating direct and proxied request by request
  so both see the same machine load. Latency is the client's: call to last byte. Besides
  the difference of the two medians, the median of the paired differences (request i through
  the scheduler minus request i direct) is reported: on a loaded machine it is the steadier
  estimate of what the scheduler adds.

Usage: ``nice .venv/bin/python bench/proxy/bench_openai_client.py [--requests 1000]``
Writes ``bench/results/proxy/openai_client.md`` and ``openai_client.png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from openai import OpenAI

from thunder_core.launcher import ChildProcess, launch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MESSAGES = [{"role": "user", "content": "hello there"}]
BLOCK = 1
TARGET_ADDED_P50_MS = 1.0
READY = r"listening on (http://\S+)"


def _start_engine() -> ChildProcess:
    return launch([sys.executable, str(HERE / "zero_engine.py")], name="zero_engine.py",
                  ready=READY, timeout_s=60)


def _start_scheduler(engine: str) -> ChildProcess:
    exe = Path(sys.executable).with_name("thunder-scheduler")
    return launch([str(exe), "serve", "--port", "0", "--backend", f"sglang={engine}"],
                  name="thunder-scheduler", ready=READY,
                  health="/ready", timeout_s=60)


def _one(client: OpenAI, stream: bool) -> float:
    started = time.perf_counter()
    if stream:
        for _ in client.chat.completions.create(model="zero", messages=MESSAGES,  # type: ignore[arg-type]
                                                max_tokens=1, stream=True):
            pass
    else:
        client.chat.completions.create(model="zero", messages=MESSAGES,  # type: ignore[arg-type]
                                       max_tokens=1)
    return (time.perf_counter() - started) * 1000


def measure(requests: int, nice: int) -> dict[tuple[str, bool], list[float]]:
    if nice:
        os.nice(nice)  # this client, and the engine and scheduler it starts (a negative value
        # needs root)
    engine = _start_engine()
    engine_url = engine.url
    try:
        scheduler = _start_scheduler(engine_url)
        scheduler_url = scheduler.url
        try:
            clients = {
                "direct": OpenAI(base_url=f"{engine_url}/v1", api_key="x", max_retries=0),
                "proxied": OpenAI(base_url=f"{scheduler_url}/v1", api_key="x", max_retries=0),
            }
            samples: dict[tuple[str, bool], list[float]] = {}
            for stream in (False, True):
                for client in clients.values():  # warm-up: the connection, caches
                    for _ in range(20):
                        _one(client, stream)
                done = 0
                while done < requests:
                    n = min(BLOCK, requests - done)
                    for target, client in clients.items():
                        samples.setdefault((target, stream), []).extend(
                            _one(client, stream) for _ in range(n))
                    done += n
            for client in clients.values():
                client.close()
            return samples
        finally:
            scheduler.stop()
    finally:
        engine.stop()


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(samples: dict[tuple[str, bool], list[float]], command: str, load: tuple[float, float],
           requests: int, nice: int) -> str:
    lines = [
        "# The official openai client over kept-alive connections: direct vs through the scheduler",
        "",
        f"Command: `{command}`",
        "",
        f"Engine `bench/proxy/zero_engine.py`; scheduler `thunder-scheduler serve --port 0 "
        f"--backend sglang=ENGINE` (default settings and policy, untagged requests); one "
        f"`openai.OpenAI` client per target (one kept-alive connection each), {requests} chat "
        f"completions with `max_tokens: 1` per row, direct and proxied alternating request by "
        f"request; engine, scheduler and client at niceness {nice}. Machine: "
        f"{os.cpu_count()} cores, shared with other work; 1-minute load "
        f"average {load[0]:.2f} at the start, {load[1]:.2f} at the end. Latency: the client's, "
        f"call to last byte.",
        "",
        "| stream | direct p50 ms | proxied p50 ms | added p50 ms | added, paired median ms | "
        "direct p99 ms | proxied p99 ms | added p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    added: dict[bool, float] = {}
    for stream in (False, True):
        d, p = samples[("direct", stream)], samples[("proxied", stream)]
        added[stream] = statistics.median(p) - statistics.median(d)
        paired = statistics.median(b - a for a, b in zip(d, p, strict=True))
        lines.append(
            f"| {'yes' if stream else 'no'} | {statistics.median(d):.2f} | "
            f"{statistics.median(p):.2f} | {added[stream]:.2f} | {paired:.2f} | "
            f"{_pct(d, 99):.2f} | "
            f"{_pct(p, 99):.2f} | {_pct(p, 99) - _pct(d, 99):.2f} |")
    paired_ns = statistics.median(
        b - a for a, b in zip(samples[("direct", False)], samples[("proxied", False)],
                              strict=True))
    verdict = "met" if added[False] <= TARGET_ADDED_P50_MS else "missed"
    paired_verdict = "met" if paired_ns <= TARGET_ADDED_P50_MS else "missed"
    lines += ["", f"Target: a non-streaming request adds <= {TARGET_ADDED_P50_MS:g} ms p50 over "
                  f"direct: difference of the medians {added[False]:.2f} ms (**{verdict}**); "
                  f"median of the paired differences {paired_ns:.2f} ms (**{paired_verdict}**).",
              ""]
    return "\n".join(lines)


def plot(samples: dict[tuple[str, bool], list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, stream in zip(axes, (False, True), strict=True):
        for target in ("direct", "proxied"):
            values = sorted(samples[(target, stream)])
            ax.plot(values, [i / len(values) for i in range(len(values))], label=target)
        ax.set_xscale("log")
        ax.set_xlabel("latency ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"openai client, {'streaming' if stream else 'non-streaming'}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="niceness of engine, scheduler and client (default -10 as root, "
                             "as bench_proxy.py: the machine is shared, so its other work "
                             "disturbs the latencies less)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "proxy")
    args = parser.parse_args()
    command = "python bench/proxy/bench_openai_client.py " + " ".join(sys.argv[1:])
    start = os.getloadavg()[0]
    samples = measure(args.requests, args.nice)
    load = (start, os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(samples, command.strip(), load, args.requests, args.nice)
    (args.out / "openai_client.md").write_text(text)
    plot(samples, args.out / "openai_client.png")
    print(text)


if __name__ == "__main__":
    main()
