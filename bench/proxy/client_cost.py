"""CPU cost of each upstream client alone: POSTs to the zero-work engine, no proxy around them.

For each client in ``UPSTREAM_CLIENTS``: 16 concurrent request loops on uvloop, each request
sent, read to the end and released (as the proxy does). Reported: process CPU time (user +
system, ``time.process_time``) per request, the minimum over ``--rounds`` interleaved rounds,
which is the estimate least disturbed by other work on a shared machine.

Usage: ``python client_cost.py ENGINE_URL [--rounds 5] [--requests 2000]``; prints one JSON
object ``{client: cpu_us_per_request}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import orjson
import uvloop

from thunder_scheduler.proxy import UPSTREAM_CLIENTS, ProxySettings

BODY = orjson.dumps({"model": "zero", "messages": [{"role": "user", "content": "hello there"}],
                     "max_tokens": 8})
CONCURRENCY = 16


async def measure(url: str, rounds: int, requests: int) -> dict[str, float]:
    best: dict[str, float] = {}
    clients = {name: make(ProxySettings(upstream_client=name))
               for name, make in UPSTREAM_CLIENTS.items()}
    headers = {"content-type": "application/json"}

    async def loop(client_name: str, count: int) -> None:
        client = clients[client_name]
        for _ in range(count):
            response = await client.send(f"{url}/v1/chat/completions", BODY, headers)
            await response.read()
            await response.aclose()

    try:
        for name in clients:  # warm-up: open the pooled connections
            await asyncio.gather(*(loop(name, 20) for _ in range(CONCURRENCY)))
        for _ in range(rounds):
            for name in clients:
                start = time.process_time()
                await asyncio.gather(*(loop(name, requests // CONCURRENCY)
                                       for _ in range(CONCURRENCY)))
                cost = (time.process_time() - start) / requests * 1e6
                best[name] = min(best.get(name, cost), cost)
    finally:
        for client in clients.values():
            await client.aclose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(measure(args.url, args.rounds, args.requests))))


if __name__ == "__main__":
    main()
