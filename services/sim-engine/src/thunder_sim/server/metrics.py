"""``GET /metrics``: Prometheus text with SGLang 0.5.23's ``sglang:`` names and labels.

Names, label sets and buckets are those of ``sglang/srt/observability/metrics_collector.py``:
- scheduler gauges (``SchedulerMetricsCollector``) carry ``model_name, engine_type, tp_rank,
  pp_rank, moe_ep_rank``: ``num_running_reqs``, ``num_queue_reqs``, ``num_used_tokens``,
  ``token_usage``, ``cache_hit_rate``, ``gen_throughput``, ``num_retracted_reqs``,
  ``max_total_num_tokens``, and the counters ``num_retracted_requests_total`` and
  ``evicted_tokens_total``;
- per-request series (``TokenizerMetricsCollector``, observed when a request finishes) carry
  ``model_name, engine_type`` plus ``is_streaming`` ("true"/"false") on
  ``prompt_tokens_total``, ``generation_tokens_total``, ``num_requests_total``,
  ``time_to_first_token_seconds``, ``e2e_request_latency_seconds``, and ``cache_source``
  ("device", or "host" for tokens HiCache loaded back) on ``cached_tokens_total``;
  ``num_aborted_requests_total``.
- with ``--enable-hierarchical-cache``: the gauges ``hicache_host_used_tokens`` and
  ``hicache_host_total_tokens`` and the counters ``load_back_tokens_total`` ("tokens loaded from
  CPU to GPU", ``metrics/collector.py``) and ``hicache_backup_tokens_total`` (tokens written to
  host). Not modelled: ``load_back_duration_seconds`` and ``hicache_backup_bytes_total``.
Latencies are modelled seconds (what the GPU would show), not wall seconds.

Simulator health is exported under ``thunder_sim_`` (event-loop lag, time scale, steps), and
the engine's recompute ledger as ``thunder_sim_prompt_miss_tokens_total{cause=...}``: every
admission's missed prompt tokens by cause, with what one engine knows alone (the owner is the
program in the request id; ``evicted_away`` = its program had no request here, acting or
paused; see ``thunder_sim.engine.ledger``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from thunder_sim.engine.types import FinishedRequest, FinishReason
from thunder_sim.server.lag import LATENESS_BUCKETS_S
from thunder_sim.server.runner import EngineRunner, Ticket

# sglang TokenizerMetricsCollector default buckets; the TTFT list is SGLang's de-duplicated and
# sorted (its literal default repeats 0.4 and 0.6), extended to 60 s for long agent prompts.
TTFT_BUCKETS_S = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0)
E2E_BUCKETS_S = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400,
                 600, 1200, 1800, 2400)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SchedulerCollector(Collector):
    """Gauges read from the engine model and the runner at scrape time."""

    def __init__(self, runner: EngineRunner, labels: dict[str, str]) -> None:
        self.runner = runner
        self.labels = labels

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=list(self.labels))
        g.add_metric(list(self.labels.values()), value)
        return g

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=list(self.labels))
        c.add_metric(list(self.labels.values()), value)
        return c

    def _sim_gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=["model_name"])
        g.add_metric([self.labels["model_name"]], value)
        return g

    def _sim_counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=["model_name"])
        c.add_metric([self.labels["model_name"]], value)
        return c

    def collect(self) -> Iterator[Metric]:
        load = self.runner.engine.load()
        counters = self.runner.engine.counters
        g, c = self._gauge, self._counter
        yield g("sglang:num_running_reqs", "The number of running requests.",
                load.num_running_reqs)
        yield g("sglang:num_queue_reqs", "The number of requests in the waiting queue.",
                load.num_waiting_reqs)
        yield g("sglang:num_used_tokens", "The number of used tokens.", load.num_used_tokens)
        yield g("sglang:token_usage", "The token usage.", load.token_usage)
        yield g("sglang:cache_hit_rate", "The prefix cache hit rate.", load.cache_hit_rate)
        yield g("sglang:gen_throughput", "The generation throughput (token/s).",
                load.gen_throughput)
        yield g("sglang:max_total_num_tokens",
                "Maximum total number of tokens in the KV cache pool.",
                load.max_total_num_tokens)
        yield g("sglang:num_retracted_reqs", "The number of retracted requests.",
                counters.num_retracted_reqs)
        yield c("sglang:num_retracted_requests", "Total number of retracted requests.",
                counters.num_retracted_reqs)
        yield c("sglang:evicted_tokens", "The number of device KV token slots freed by "
                "eviction.", counters.evicted_tokens)
        if load.hicache_host_total_tokens:
            yield g("sglang:hicache_host_used_tokens", "Tokens held in the HiCache host pool.",
                    load.hicache_host_used_tokens)
            yield g("sglang:hicache_host_total_tokens", "Capacity of the HiCache host pool in "
                    "tokens.", load.hicache_host_total_tokens)
            yield c("sglang:load_back_tokens", "The number of tokens loaded from CPU to GPU.",
                    counters.load_back_tokens)
            yield c("sglang:hicache_backup_tokens", "The number of tokens backed up from GPU "
                    "to CPU.", counters.hicache_backup_tokens)
        lag = self.runner.lag
        g, c = self._sim_gauge, self._sim_counter
        yield g("thunder_sim_time_scale", "Modelled seconds per wall second.",
                self.runner.clock.time_scale)
        yield c("thunder_sim_event_loop_lag_seconds", "Cumulative wall seconds the engine "
                "loop woke later than planned.", lag.lag_total_s)
        yield c("thunder_sim_lost_step_wall_seconds", "Cumulative wall seconds the modelled "
                "GPU sat idle because the loop fell behind (the distortion).", lag.lost_total_s)
        yield c("thunder_sim_planned_step_wall_seconds", "Cumulative planned wall seconds of "
                "engine steps.", lag.planned_total_s)
        yield g("thunder_sim_event_loop_lag_fraction", "Lost / planned step time over the last "
                "window (distorted above 0.10).", lag.last_window_fraction)
        yield g("thunder_sim_event_loop_lag_max_seconds", "Worst lateness in the last window "
                "(wall seconds).", lag.max_lag_s)
        yield g("thunder_sim_event_loop_lag_p50_seconds", "Median lateness of the engine "
                "loop's wake-ups in the last window (wall seconds).", lag.last_window_p50_s)
        yield g("thunder_sim_event_loop_lag_p99_seconds", "99th-percentile lateness of the "
                "engine loop's wake-ups in the last window (wall seconds).", lag.last_window_p99_s)
        cumulative, buckets = 0, []
        for le, n in zip((*LATENESS_BUCKETS_S, float("inf")), lag.lateness_counts, strict=True):
            cumulative += n
            buckets.append((str(le) if le != float("inf") else "+Inf", cumulative))
        h = HistogramMetricFamily("thunder_sim_engine_wakeup_lateness_seconds", "Lateness of "
                                  "each engine-loop wake-up against its plan (wall seconds).",
                                  labels=["model_name"])
        h.add_metric([self.labels["model_name"]], buckets, lag.lateness_sum_s)
        yield h
        yield c("thunder_sim_time_scale_changes", "Automatic time-scale reductions.",
                lag.scale_changes_total)
        yield c("thunder_sim_lag_warnings", "Sustained-lag warnings.", lag.warnings_total)
        yield c("thunder_sim_engine_steps", "Engine step calls.", self.runner.steps_total)
        yield c("thunder_sim_recomputed_tokens", "Tokens prefilled again after retraction.",
                counters.recomputed_tokens)
        miss = CounterMetricFamily("thunder_sim_prompt_miss_tokens", "Prompt tokens prefilled "
                                   "(not cache hits) by cause, every admission.",
                                   labels=["model_name", "cause"])
        for cause, n in counters.miss_tokens.items():
            miss.add_metric([self.labels["model_name"], str(cause)], n)
        yield miss


class SimMetrics:
    def __init__(self, runner: EngineRunner, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        base = {"model_name": model_name, "engine_type": "unified"}
        sched = {**base, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
        self.registry.register(_SchedulerCollector(runner, sched))
        self._base = base
        names = [*base, "is_streaming"]
        r = self.registry
        self.prompt_tokens = Counter("sglang:prompt_tokens_total",
                                     "Number of prefill tokens processed.", names, registry=r)
        self.generation_tokens = Counter("sglang:generation_tokens_total",
                                         "Number of generation tokens processed.", names,
                                         registry=r)
        self.num_requests = Counter("sglang:num_requests_total",
                                    "Number of requests processed.", names, registry=r)
        self.cached_tokens = Counter("sglang:cached_tokens_total",
                                     "Number of cached prompt tokens by source "
                                     "(device/host/storage).", [*base, "cache_source"],
                                     registry=r)
        self.aborted = Counter("sglang:num_aborted_requests_total",
                               "Number of requests aborted.", list(base), registry=r)
        self.ttft = Histogram("sglang:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", names,
                              buckets=TTFT_BUCKETS_S, registry=r)
        self.e2e = Histogram("sglang:e2e_request_latency_seconds",
                             "Histogram of End-to-end request latency in seconds", names,
                             buckets=E2E_BUCKETS_S, registry=r)

        # labelled children resolved once (``labels()`` costs ~10 us per call, per request)
        def child(m: Counter, stream: bool) -> Counter:
            return m.labels(**base, is_streaming="true" if stream else "false")

        def hchild(m: Histogram, stream: bool) -> Histogram:
            return m.labels(**base, is_streaming="true" if stream else "false")

        self._counters = {s: (child(self.prompt_tokens, s), child(self.generation_tokens, s),
                              child(self.num_requests, s)) for s in (True, False)}
        self._latencies = {s: (hchild(self.ttft, s), hchild(self.e2e, s)) for s in (True, False)}
        self._cached_device = self.cached_tokens.labels(**base, cache_source="device")
        self._cached_host: Counter | None = None     # created on first use, as SGLang's
        self._aborted = self.aborted.labels(**base)

    def on_finish(self, ticket: Ticket, f: FinishedRequest) -> None:
        prompt, generation, requests = self._counters[ticket.stream]
        ttft, e2e = self._latencies[ticket.stream]
        prompt.inc(f.prompt_tokens)
        generation.inc(f.completion_tokens)
        requests.inc()
        if f.cached_tokens > f.host_cached_tokens:
            self._cached_device.inc(f.cached_tokens - f.host_cached_tokens)
        if f.host_cached_tokens > 0:
            if self._cached_host is None:
                self._cached_host = self.cached_tokens.labels(**self._base, cache_source="host")
            self._cached_host.inc(f.host_cached_tokens)
        if f.finish_reason == FinishReason.ABORT:
            self._aborted.inc()
        if f.first_token_s is not None:
            ttft.observe(f.first_token_s - f.arrival_s)
        e2e.observe(f.finished_s - f.arrival_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
