"""Prometheus series of the scheduler service, on a registry owned by one app (no globals).

Series (prefix ``thunder_``):

* ``programs{status,phase}``: programs in the table, refreshed from the core's snapshot at
  each scrape;
* ``tokens_total{kind}``: engine-reported tokens, kind = prompt, completion, cached;
* ``cache_hit_rate``: cached / prompt tokens over the service's life (token-weighted);
* ``backend_kv_used_tokens{backend}``, ``backend_kv_capacity_tokens{backend}``,
  ``backend_healthy{backend}``: from the backend monitor;
* ``proxy_overhead_seconds{streaming}``: latency the proxy itself added to a request;
* ``requests_total{outcome}``: finished LLM requests by outcome (ok, error, disconnected);
* ``pauses_total``, ``restores_total``, ``migrations_total``, ``lease_expiries_total``,
  ``prewarms_total``, ``engine_lever_failures_total{lever}``;
* ``held_requests``: requests parked at the proxy now;
* ``decision_seconds``: wall time of one core call (``handle`` or ``tick``).

Histogram buckets: proxy overhead from 50 us to 100 ms (the target is an added p50 under 1 ms,
issue 2); decision latency from 5 us to 50 ms (the target is a p99 under 1 ms, issue 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from thunder_core.contract import ProgramPhase, ProgramStatus

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

PROXY_BUCKETS_S: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
DECISION_BUCKETS_S: Final = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.05,
)


class ServiceMetrics:
    """All series of one service instance, registered on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.programs = Gauge(
            "thunder_programs", "Programs in the table by status and phase",
            ["status", "phase"], registry=r,
        )
        self.tokens = Counter(
            "thunder_tokens", "Engine-reported tokens by kind", ["kind"], registry=r
        )
        self.cache_hit_rate = Gauge(
            "thunder_cache_hit_rate", "Cached / prompt tokens since start (token-weighted)",
            registry=r,
        )
        self.backend_used = Gauge(
            "thunder_backend_kv_used_tokens", "KV tokens in use on a backend (engine-reported)",
            ["backend"], registry=r,
        )
        self.backend_capacity = Gauge(
            "thunder_backend_kv_capacity_tokens", "KV pool size of a backend", ["backend"],
            registry=r,
        )
        self.backend_healthy = Gauge(
            "thunder_backend_healthy", "1 when the backend is healthy", ["backend"], registry=r
        )
        self.proxy_overhead = Histogram(
            "thunder_proxy_overhead_seconds", "Latency added by the proxy to one request",
            ["streaming"], buckets=PROXY_BUCKETS_S, registry=r,
        )
        self.requests = Counter(
            "thunder_requests", "Finished LLM requests by outcome", ["outcome"], registry=r
        )
        self.pauses = Counter("thunder_pauses", "Programs paused", registry=r)
        self.restores = Counter("thunder_restores", "Paused programs restored", registry=r)
        self.migrations = Counter(
            "thunder_migrations", "Programs restored on another backend than before", registry=r
        )
        self.lease_expiries = Counter(
            "thunder_lease_expiries", "Programs ended because their lease expired", registry=r
        )
        self.prewarms = Counter("thunder_prewarms", "Prefix warm-ups sent", registry=r)
        self.lever_failures = Counter(
            "thunder_engine_lever_failures", "Engine levers that failed (logged, not fatal)",
            ["lever"], registry=r,
        )
        self.held = Gauge("thunder_held_requests", "Requests parked at the proxy", registry=r)
        self.upstream_failures = Counter(
            "thunder_upstream_failures", "Forwards that could not reach a backend",
            ["backend"], registry=r,
        )
        self.decision = Histogram(
            "thunder_decision_seconds", "Wall time of one scheduling-core call",
            buckets=DECISION_BUCKETS_S, registry=r,
        )
        self._prompt_tokens = 0
        self._cached_tokens = 0
        for status in ProgramStatus:
            for phase in ProgramPhase:
                self.programs.labels(status.value, phase.value).set(0)
        # label children bound once: ``labels()`` costs a lock and a dict lookup per call,
        # and these are touched on every proxied request.
        self._prompt = self.tokens.labels("prompt")
        self._completion = self.tokens.labels("completion")
        self._cached = self.tokens.labels("cached")
        self._overhead = {
            True: self.proxy_overhead.labels("true"), False: self.proxy_overhead.labels("false")
        }
        self._requests_by_outcome: dict[str, Counter] = {}

    def count_request(self, outcome: str) -> None:
        """One finished LLM request with ``outcome`` (ok, error, disconnected)."""
        child = self._requests_by_outcome.get(outcome)
        if child is None:
            child = self._requests_by_outcome[outcome] = self.requests.labels(outcome)
        child.inc()

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        """The latency the proxy itself added to one request."""
        self._overhead[streaming].observe(seconds)

    def observe_usage(self, prompt: int, completion: int, cached: int | None) -> None:
        self._prompt.inc(prompt)
        self._completion.inc(completion)
        self._prompt_tokens += prompt
        if cached is not None:
            self._cached.inc(cached)
            self._cached_tokens += cached
        if self._prompt_tokens > 0:
            self.cache_hit_rate.set(self._cached_tokens / self._prompt_tokens)

    def set_programs(self, rows: Iterable[tuple[str, str]]) -> None:
        """Replace the program counts with ``(status, phase)`` rows, one per program."""
        counts: dict[tuple[str, str], int] = {
            (status.value, phase.value): 0 for status in ProgramStatus for phase in ProgramPhase
        }
        for row in rows:
            counts[row] = counts.get(row, 0) + 1
        for (status, phase), count in counts.items():
            self.programs.labels(status, phase).set(count)

    def set_backend(
        self, name: str, healthy: bool, capacity_tokens: int | None, used_tokens: int | None
    ) -> None:
        self.backend_healthy.labels(name).set(1 if healthy else 0)
        if capacity_tokens is not None:
            self.backend_capacity.labels(name).set(capacity_tokens)
        if used_tokens is not None:
            self.backend_used.labels(name).set(used_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
