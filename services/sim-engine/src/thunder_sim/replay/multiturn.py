"""SGLang's multi-turn HiCache benchmark client, run against one simulated engine in virtual time.

What it models is ``benchmark/hicache/bench_multiturn.py`` in sgl-project/sglang (read at
commit 028e262d), with the arguments of the published run in ``benchmark/hicache/disk.sh``:

* ``num_clients`` conversations, each ``num_rounds`` requests long. A client's first prompt
  is ``request_length`` fresh tokens; after each answer (``output_length`` tokens,
  ``ignore_eos``) its next prompt is the whole history (every earlier prompt and answer) plus
  ``request_length`` new tokens (``sub_question_input_length`` 0 = ``request_length``).
* The sender keeps at most ``max_parallel`` requests in flight (``sent - completed <
  max_parallel``); with room it pops one request from the ready queue at random
  (``--ready-queue-policy random``, the default) and then sleeps an exponential gap of mean
  ``1 / request_rate``; without room it polls every 50 ms. Initially every client's first
  request is ready; a client's next request becomes ready when its answer arrives.
* The first rate of the script's auto-run (``request_rates = [16, 14, ...]``, each after a
  ``/flush_cache``) is the one whose numbers ``disk.sh`` records; this runs that one rate on
  a fresh engine. Seeded like the script (``random.seed(args.seed)``, seed 1), though the
  draws cannot match its interleaving of threads.

Token content is unique per client and round, so caching follows only the prompt structure.
Model differences, stated where results are written: the simulated engine never inserts
output tokens into the radix tree (``thunder_sim/engine/engine.py``), where SGLang caches a
finished request's prompt and output, so a round's match stops at the previous prompt (at most
5,504 of 8,320 prompt tokens per client over 5 rounds, against 5,760 when the answers match too);
and the benchmark retokenizes text, which the block keys skip.

Pure: the engine is stepped with the modelled clock; nothing reads the wall clock.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

from thunder_sim.engine import Engine, EngineRequest

BLOCK = 64
"""Tokens per radix block (``--page-size 64`` in ``disk.sh``; lengths here are multiples)."""

POLL_S = 0.05
"""The sender's sleep while ``max_parallel`` requests are in flight (``asyncio.sleep(0.05)``)."""


@dataclass(frozen=True, slots=True)
class MultiTurnConfig:
    """``bench_multiturn.py``'s arguments (defaults: its own, with ``disk.sh``'s overrides)."""

    num_clients: int = 256
    max_parallel: int = 32        # disk.sh: --max-parallel 32 (script default 128)
    request_length: int = 512
    output_length: int = 64
    num_rounds: int = 5
    request_rate: float = 16.0    # the first rate of the auto-run
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("num_clients", "max_parallel", "num_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"MultiTurnConfig.{name} must be >= 1")
        for name in ("request_length", "output_length"):
            value = getattr(self, name)
            if value < BLOCK or value % BLOCK:
                raise ValueError(f"MultiTurnConfig.{name} must be a positive multiple of "
                                 f"{BLOCK} (whole radix blocks), got {value}")
        if self.request_rate <= 0:
            raise ValueError("MultiTurnConfig.request_rate must be positive")

    @property
    def total_requests(self) -> int:
        return self.num_clients * self.num_rounds


@dataclass
class MultiTurnResult:
    """What the script prints (its ``performance_data["summary"]``) plus the engine's hit rate."""

    requests: int
    duration_s: float
    ttft_s: list[float] = field(repr=False)
    latency_s: list[float] = field(repr=False)
    prompt_tokens: int
    cached_tokens: int
    host_cached_tokens: int

    @property
    def cache_hit_rate(self) -> float:
        """Cached over prompt tokens, as SGLang's ``cache_hit_rate`` counts them."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def average_ttft_s(self) -> float:
        return statistics.fmean(self.ttft_s)

    @property
    def median_ttft_s(self) -> float:
        return sorted(self.ttft_s)[len(self.ttft_s) // 2]   # the script's own index rule

    @property
    def p90_ttft_s(self) -> float:
        return sorted(self.ttft_s)[int(0.9 * len(self.ttft_s))]

    @property
    def average_latency_s(self) -> float:
        return statistics.fmean(self.latency_s)


class _Client:
    __slots__ = ("blocks", "round")

    def __init__(self, blocks: list[int]) -> None:
        self.blocks = blocks
        self.round = 0


def run_multiturn(engine: Engine, config: MultiTurnConfig | None = None) -> MultiTurnResult:
    """Drive ``engine`` (fresh, caches empty) through the benchmark; the engine's own clock
    starts at 0. Returns once every client finished its rounds."""
    cfg = config or MultiTurnConfig()
    rng = random.Random(cfg.seed)
    next_key = 0

    def fresh(tokens: int) -> list[int]:
        nonlocal next_key
        keys = list(range(next_key, next_key + tokens // BLOCK))
        next_key += tokens // BLOCK
        return keys

    clients = [_Client(fresh(cfg.request_length)) for _ in range(cfg.num_clients)]
    ready: list[int] = list(range(cfg.num_clients))
    sent_at: dict[str, tuple[int, float]] = {}
    ttft: list[float] = []
    latency: list[float] = []
    prompt_tokens = cached = host_cached = 0
    in_flight = completed = 0
    now = 0.0
    next_send = 0.0

    def send(at: float) -> None:
        nonlocal in_flight
        client_id = ready.pop(rng.randrange(len(ready)))
        client = clients[client_id]
        rid = f"c{client_id}:r{client.round}"
        engine.submit(EngineRequest(rid, tuple(client.blocks), len(client.blocks) * BLOCK,
                                    cfg.output_length, arrival_s=at), at)
        sent_at[rid] = (client_id, at)
        in_flight += 1

    while completed < cfg.total_requests:
        # the sender's loop up to ``now``: one pop per Poisson gap while there is room
        while next_send <= now:
            if in_flight >= cfg.max_parallel:
                next_send = now + POLL_S
                break
            if ready:
                send(next_send)
            next_send += rng.expovariate(cfg.request_rate)
        if not engine.has_work():
            now = max(now, next_send)
            continue
        result = engine.step(now, until_s=next_send)
        now += result.duration_s
        for fin in result.finished:
            client_id, at = sent_at.pop(fin.rid)
            in_flight -= 1
            completed += 1
            prompt_tokens += fin.prompt_tokens
            cached += fin.cached_tokens
            host_cached += fin.host_cached_tokens
            first = fin.first_token_s if fin.first_token_s is not None else fin.finished_s
            ttft.append(first - at)
            latency.append(fin.finished_s - at)
            client = clients[client_id]
            client.round += 1
            if client.round < cfg.num_rounds:
                client.blocks += fresh(cfg.output_length) + fresh(cfg.request_length)
                ready.append(client_id)
    return MultiTurnResult(
        requests=completed, duration_s=now, ttft_s=ttft, latency_s=latency,
        prompt_tokens=prompt_tokens, cached_tokens=cached, host_cached_tokens=host_cached,
    )


__all__ = ["BLOCK", "MultiTurnConfig", "MultiTurnResult", "run_multiturn"]
