"""A closed-loop load client that mimics agent programs against an SGLang-compatible server.

Each of ``--programs`` programs loops: POST a streaming ``/v1/chat/completions`` (``max_tokens``
= ``--output-tokens``, ``stream_options.include_usage``), read the stream to ``[DONE]``, wait a
think/tool gap, append the output and a tool result to its context, repeat. A program's context
starts with a system prompt shared by all programs (``--system-tokens``) plus a short task, and
grows by the output plus a tool result of ``U[tool_min, tool_max]`` tokens per step; when it
would exceed ``--max-context-tokens`` the program starts a fresh conversation (a new task).

Prompts, two kinds (``--prompt``):

- ``trace``: the simulator's ``thunder_trace`` extension, as the trace replay sends it: the
  context as prefix-unique ids of 64-token blocks (shared ids for the system prompt, fresh ids
  per program after it; a partial last block gets a new id whenever it grows) and the exact
  ``prompt_tokens``. ``messages`` is a one-line placeholder, as in ``thunder_sim.replay.live``.
- ``text``: real chat messages: a system message, a user task, then ``assistant`` / ``tool``
  message pairs. The assistant message is the text the simulator generates (deterministic filler
  words, :func:`thunder_sim.tokenizer.filler_text`), so the client sends back exactly what it
  received without paying to parse every chunk; tool results are words of one token each.

Gaps are modelled seconds (``U[gap_min_s, gap_max_s]``) divided by ``--time-scale``. The client
reads the stream in raw pieces and decodes only the last event (the usage chunk), to stay cheap:
on a 2-core machine it shares the cores with the server under test. It probes its own
event-loop lag (how late a 10 ms sleep wakes) so a saturated client can be told apart from a
slow server.

Run alone: ``python bench/sim_server/load.py --url http://127.0.0.1:30000 --programs 256
--duration-s 30 --prompt trace``; prints one JSON summary line. ``bench_live_capacity.py`` drives
it as a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from thunder_core.contract import TRACE_FIELD, TraceFields
from thunder_sim.tokenizer import filler_text

BLOCK_TOKENS = 64
WORDS = tuple(f" w{i:03d}" for i in range(1000))  # one token each (space + 4 characters)
LAG_PROBE_S = 0.01


@dataclass
class Stats:
    requests: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    errors: int = 0
    in_flight: int = 0
    last_error: str = ""
    ttft_wall_s: list[float] = field(default_factory=list)
    e2e_wall_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)


@dataclass
class Program:
    """One agent program's growing context, in both representations."""

    index: int
    rng: random.Random
    args: argparse.Namespace
    conversation: int = 0
    tokens: int = 0
    blocks: list[int] = field(default_factory=list)   # ids of the full 64-token blocks
    messages: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 0

    def _fresh_id(self) -> int:
        self.next_id += 1
        return (self.index + 1) * 10_000_000 + self.next_id

    def reset(self) -> None:
        a = self.args
        self.conversation += 1
        task = 64 + self.rng.randrange(192)
        self.tokens = a.system_tokens + task
        shared = a.system_tokens // BLOCK_TOKENS
        self.blocks = list(range(1, shared + 1))    # the shared system prompt's blocks
        self.blocks += [self._fresh_id() for _ in range(self.tokens // BLOCK_TOKENS - shared)]
        self.messages = [
            {"role": "system", "content": _words(random.Random(0), a.system_tokens)},
            {"role": "user", "content": _words(self.rng, task)},
        ]

    def grow(self, output_tokens: int) -> None:
        tool = self.rng.randint(self.args.tool_min_tokens, self.args.tool_max_tokens)
        if self.tokens + output_tokens + tool + self.args.output_tokens > \
                self.args.max_context_tokens:
            self.reset()
            return
        full_before = self.tokens // BLOCK_TOKENS
        self.tokens += output_tokens + tool
        self.blocks += [self._fresh_id() for _ in range(self.tokens // BLOCK_TOKENS - full_before)]
        self.messages.append({"role": "assistant", "content": filler_text(0, output_tokens)})
        self.messages.append({"role": "tool", "content": _words(self.rng, tool)})

    def body(self) -> dict[str, Any]:
        a = self.args
        body: dict[str, Any] = {
            "model": "sim", "max_tokens": a.output_tokens, "stream": True,
            "stream_options": {"include_usage": True},
        }
        if a.prompt == "trace":
            ids = list(self.blocks)
            if self.tokens % BLOCK_TOKENS:
                ids.append(self._fresh_id())    # the partial last block changes every step
            body["messages"] = [{"role": "user", "content": "(trace replay)"}]
            body[TRACE_FIELD] = {TraceFields.HASH_IDS: ids, TraceFields.PROMPT_TOKENS: self.tokens,
                                 TraceFields.SESSION: "bench",
                                 TraceFields.BLOCK_TOKENS: BLOCK_TOKENS}
        else:
            body["messages"] = self.messages
        return body


def _words(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(WORDS) for _ in range(n))


async def _one(http: aiohttp.ClientSession, url: str, prog: Program, stats: Stats) -> int:
    """One streaming request; returns its completion tokens (0 on error)."""
    t0 = time.monotonic()
    first: float | None = None
    tail = b""
    stats.in_flight += 1
    try:
        async with http.post(url, data=orjson.dumps(prog.body()),
                             headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for piece in resp.content.iter_any():
                if first is None:
                    first = time.monotonic()
                tail = (tail + piece)[-4096:]
    except (aiohttp.ClientError, RuntimeError, TimeoutError) as e:
        stats.errors += 1
        stats.last_error = str(e)
        return 0
    finally:
        stats.in_flight -= 1
    end = time.monotonic()
    events = [e for e in tail.split(b"\n\n") if e.startswith(b"data: {")]
    usage = orjson.loads(events[-1][6:]).get("usage") if events else None
    if not tail.rstrip().endswith(b"data: [DONE]") or not usage:
        stats.errors += 1
        stats.last_error = "stream ended without usage and [DONE]"
        return 0
    stats.requests += 1
    stats.completion_tokens += usage["completion_tokens"]
    stats.prompt_tokens += usage["prompt_tokens"]
    stats.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    stats.e2e_wall_s.append(end - t0)
    if first is not None:
        stats.ttft_wall_s.append(first - t0)
    return int(usage["completion_tokens"])


async def _program(http: aiohttp.ClientSession, url: str, prog: Program, stats: Stats,
                   stop_at: float) -> None:
    a = prog.args
    prog.reset()
    # stagger the start over one mean gap so programs do not arrive in lockstep
    await asyncio.sleep(prog.rng.uniform(0, (a.gap_min_s + a.gap_max_s) / 2 / a.time_scale))
    while time.monotonic() < stop_at:
        out = await _one(http, url, prog, stats)
        prog.grow(out or a.output_tokens)
        await asyncio.sleep(prog.rng.uniform(a.gap_min_s, a.gap_max_s) / a.time_scale)


async def _probe(stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        stats.lags_s.append(max(0.0, loop.time() - t - LAG_PROBE_S))


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    url = args.url.rstrip("/") + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        probe = asyncio.create_task(_probe(stats))
        t0 = time.monotonic()
        stop_at = t0 + args.duration_s
        progs = [Program(i, random.Random(args.seed * 100_003 + i), args)
                 for i in range(args.programs)]
        tasks = [asyncio.create_task(_program(http, url, p, stats, stop_at)) for p in progs]
        # programs stop issuing at stop_at; in-flight requests are left to finish, bounded
        _done, pending = await asyncio.wait(tasks, timeout=args.duration_s + args.drain_s)
        unfinished = stats.in_flight
        for t in pending:
            t.cancel()
        wall = time.monotonic() - t0
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        await asyncio.gather(*pending, return_exceptions=True)
    return {
        "programs": args.programs, "prompt": args.prompt, "wall_s": wall,
        "requests": stats.requests, "completion_tokens": stats.completion_tokens,
        "prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens,
        "errors": stats.errors, "last_error": stats.last_error,
        "unfinished_at_drain": unfinished,
        "ttft_wall_p50_s": _pct(stats.ttft_wall_s, 50),
        "e2e_wall_p50_s": _pct(stats.e2e_wall_s, 50),
        "client_lag_p50_s": _pct(stats.lags_s, 50), "client_lag_p99_s": _pct(stats.lags_s, 99),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--programs", type=int, default=256)
    p.add_argument("--prompt", choices=["trace", "text"], default="trace")
    p.add_argument("--duration-s", type=float, default=30.0, help="wall seconds issuing work")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="wall seconds in-flight requests may take to finish after that")
    p.add_argument("--time-scale", type=float, default=20.0, help="to scale the gaps")
    p.add_argument("--output-tokens", type=int, default=200)
    p.add_argument("--system-tokens", type=int, default=2048)
    p.add_argument("--tool-min-tokens", type=int, default=64)
    p.add_argument("--tool-max-tokens", type=int, default=1024)
    p.add_argument("--max-context-tokens", type=int, default=16384)
    p.add_argument("--gap-min-s", type=float, default=0.5, help="modelled think/tool gap")
    p.add_argument("--gap-max-s", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.programs < 1 or args.duration_s <= 0 or args.time_scale <= 0:
        p.error("--programs, --duration-s and --time-scale must be positive")
    if not 0 <= args.gap_min_s <= args.gap_max_s:
        p.error("--gap-min-s must be in [0, --gap-max-s]")
    if args.system_tokens % BLOCK_TOKENS:
        p.error(f"--system-tokens must be a multiple of {BLOCK_TOKENS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as r:
        out = r.run(run(args))
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
