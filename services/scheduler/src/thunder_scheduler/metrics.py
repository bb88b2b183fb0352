"""Prometheus series of the scheduler service, on a registry owned by one app (no globals).

Series (prefix ``thunder_``):

* ``programs{status,phase}``: programs in the table, refreshed from the core's snapshot at
  each scrape;
* ``tokens_total{kind}``: engine-reported tokens, kind = prompt, completion, cached;
* ``cache_hit_rate``: cached / prompt tokens over the service's life (token-weighted);
* ``backend_kv_used_tokens{backend}``, ``backend_kv_capacity_tokens{backend}``,
  ``backend_host_kv_capacity_tokens{backend}`` (the host tier, 0 without one),
  ``backend_healthy{backend}``: from the backend monitor;
* ``proxy_overhead_seconds{streaming}``: latency the proxy itself added to a request;
* ``requests_total{outcome}``: finished LLM requests by outcome (ok, error, disconnected);
* ``pauses_total``, ``restores_total``, ``migrations_total``, ``lease_expiries_total``,
  ``prewarms_total``, ``engine_lever_failures_total{lever}``;
* ``paused_kv_total{place}``: pauses by where the core put the program's KV (device, host,
  gone); ``host_kv_transfers_total{direction}``: offloads to and load-backs from a host tier
  done by an engine call of ours (llama.cpp slot save / restore; SGLang HiCache moves KV
  itself, docs/host-tier.md);
* ``prompt_splits_total{result}``: tool-call responses whose next prefix was prefilled while
  the tool ran (``sent``) or not (``cached``: still resident; ``paused``: warmed on resume;
  ``tool_long``, ``no_room``: the guard of ``thunder_scheduling.prompt_split``);
* ``cache_hint_levers_total{hint,result}``: engine levers run for cache hints
  (``shared_prefix``: ``sent`` / ``cached`` / ``mismatch``; ``context_compacted``: ``forgotten``);
* ``held_requests``: requests parked at the proxy now;
* ``hold_seconds``: how long a program's request waited at the proxy before it was admitted
  (0 for one admitted at once);
* ``backend_request_seconds{backend}``: from placement on a backend to the last byte of the
  answer (streams included), as the proxy sees it;
* ``programs_started_total{framework}``, ``programs_ended_total{framework,status}``: program
  starts and ends (status ok, error, cancelled or lease_expired); a framework outside
  ``thunder_core.contract.Framework`` counts as ``other``;
* ``decision_seconds``: wall time of one core call (``handle`` or ``tick``);
* ``build_info{version,contract,python}``: always 1; the labels say what runs.

Histogram buckets: proxy overhead from 50 us to 100 ms (the target is an added p50 under
1 ms); decision latency from 5 us to 50 ms (the target is a p99 under 1 ms); hold
time from 1 ms to 30 min (the core's aging bound is 5 min, a lease 30); backend latency from
10 ms to 10 min (the proxy's read timeout).

``docs/metrics.md`` is generated from this registry (``scripts/gen_docs.py``); a test fails when
it drifts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from thunder_core.contract import CONTRACT_VERSION, Framework, ProgramPhase, ProgramStatus
from thunder_scheduler import __version__

__all__ = ["CONTENT_TYPE_LATEST", "SeriesDoc", "ServiceMetrics", "describe_series"]

PROXY_BUCKETS_S: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
HOLD_BUCKETS_S: Final = (
    0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)
BACKEND_LATENCY_BUCKETS_S: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
FRAMEWORKS: Final = frozenset(f.value for f in Framework)
DECISION_BUCKETS_S: Final = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.05,
)


def _framework_label(framework: str) -> str:
    """Label values stay bounded: a framework the contract does not name is ``other``."""
    return framework if framework in FRAMEWORKS else Framework.OTHER.value


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
        self.backend_host_capacity = Gauge(
            "thunder_backend_host_kv_capacity_tokens",
            "KV tokens a backend can keep in its host tier (0: none)", ["backend"], registry=r,
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
        self.paused_kv = Counter(
            "thunder_paused_kv", "Pauses by where the program's KV was put (device, host, gone)",
            ["place"], registry=r,
        )
        self.host_transfers = Counter(
            "thunder_host_kv_transfers",
            "Engine calls that moved a program's KV to (offload) or from (load_back) a host tier",
            ["direction"], registry=r,
        )
        self.prompt_splits = Counter(
            "thunder_prompt_splits",
            "Tool-call responses whose next prefix was prefilled (sent) or not (cached, paused, "
            "tool_long, no_room)",
            ["result"], registry=r,
        )
        self.cache_hint_levers = Counter(
            "thunder_cache_hint_levers",
            "Engine levers run for cache hints (hint, result: shared_prefix sent / cached / "
            "mismatch; context_compacted forgotten)",
            ["hint", "result"], registry=r,
        )
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
        self.hold = Histogram(
            "thunder_hold_seconds",
            "Wall time a program's request waited at the proxy before admission",
            buckets=HOLD_BUCKETS_S, registry=r,
        )
        self.backend_latency = Histogram(
            "thunder_backend_request_seconds",
            "Wall time from placement on a backend to the end of its answer",
            ["backend"], buckets=BACKEND_LATENCY_BUCKETS_S, registry=r,
        )
        self.programs_started = Counter(
            "thunder_programs_started", "Programs started, by framework", ["framework"],
            registry=r,
        )
        self.programs_ended = Counter(
            "thunder_programs_ended", "Programs ended, by framework and end status",
            ["framework", "status"], registry=r,
        )
        self.build_info = Gauge(
            "thunder_build_info", "Always 1; the labels say which build runs",
            ["version", "contract", "python"], registry=r,
        )
        python = ".".join(map(str, sys.version_info[:3]))
        self.build_info.labels(__version__, CONTRACT_VERSION, python).set(1)
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

    def program_started(self, framework: str) -> None:
        self.programs_started.labels(_framework_label(framework)).inc()

    def program_ended(self, framework: str, status: str) -> None:
        self.programs_ended.labels(_framework_label(framework), status).inc()

    def observe_hold(self, seconds: float) -> None:
        self.hold.observe(seconds)

    def observe_backend_latency(self, backend: str, seconds: float) -> None:
        self.backend_latency.labels(backend).observe(seconds)

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
        self, name: str, healthy: bool, capacity_tokens: int | None, used_tokens: int | None,
        host_capacity_tokens: int | None = None,
    ) -> None:
        self.backend_healthy.labels(name).set(1 if healthy else 0)
        if capacity_tokens is not None:
            self.backend_capacity.labels(name).set(capacity_tokens)
        if host_capacity_tokens is not None:
            self.backend_host_capacity.labels(name).set(host_capacity_tokens)
        if used_tokens is not None:
            self.backend_used.labels(name).set(used_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class SeriesDoc:
    """One series family as ``/metrics`` serves it (for the docs and the dashboard test)."""

    exposed_name: str
    """``thunder_pauses_total`` for a counter, the family name otherwise."""
    kind: str
    labels: tuple[str, ...]
    help: str

    def sample_names(self) -> frozenset[str]:
        """The sample names a scrape can hold for this family."""
        if self.kind == "histogram":
            base = self.exposed_name
            return frozenset({f"{base}_bucket", f"{base}_sum", f"{base}_count"})
        return frozenset({self.exposed_name})


def _declared_labels(registry: Any) -> dict[str, tuple[str, ...]]:
    # prometheus_client keeps label names on each metric object, also before any child exists
    # (a scrape shows labels only once a child was used); nested registries are walked too.
    names: dict[str, tuple[str, ...]] = {}
    for collector in list(getattr(registry, "_collector_to_names", {})):
        labels = getattr(collector, "_labelnames", None)
        if labels is not None:
            names[collector._name] = tuple(labels)
        nested = getattr(collector, "_own", None)
        if isinstance(nested, CollectorRegistry):
            names.update(_declared_labels(nested))
    return names


def describe_series(registry: CollectorRegistry) -> list[SeriesDoc]:
    """Every family ``registry`` serves, sorted by name, with its labels and help text."""
    declared = _declared_labels(registry)
    rows = []
    for family in registry.collect():
        labels = declared.get(family.name) or tuple(getattr(family, "_labelnames", ()))
        if not labels:
            labels = tuple(sorted(
                {k for sample in family.samples for k in sample.labels if k != "le"}
            ))
        exposed = family.name + "_total" if family.type == "counter" else family.name
        rows.append(SeriesDoc(exposed, family.type, tuple(labels), family.documentation))
    return sorted(rows, key=lambda row: row.exposed_name)
