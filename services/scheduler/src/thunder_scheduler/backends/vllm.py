"""vLLM backend: capacity from ``/metrics`` ``vllm:cache_config_info``; abort by disconnect.

vLLM publishes its KV cache configuration as an info-style gauge whose labels are the
``CacheConfig`` fields (``vllm/v1/metrics/loggers.py``: ``vllm:cache_config_info`` built
from ``cache_config.metrics_info()``, one series per engine index under data
parallelism, label ``engine``). Capacity = ``block_size * num_gpu_blocks`` per series,
summed over engines. The gauge exists only while stats logging is on: a server started
with ``--disable-log-stats``, or one still profiling memory (``num_gpu_blocks="None"``),
is reported unavailable with that reason rather than assumed infinite.

Load, from the same scrape: ``vllm:kv_cache_usage_perc`` (a fraction in [0, 1] despite
the name; ``vllm:gpu_cache_usage_perc`` before 0.10) times each engine's capacity;
``vllm:num_requests_running`` / ``vllm:num_requests_waiting``; prefix-cache counters
``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total`` (tokens) give
the hit rate; ``vllm:prompt_tokens_total`` the prompt counter.

Requests: body field ``request_id`` and header ``X-Request-Id`` carry our id;
``priority`` is added only when the server runs ``--scheduling-policy priority``
(construct with ``priority_scheduling=True``; the service's setting
``vllm_priority_scheduling``): vLLM rejects a non-zero priority under its default FCFS
policy. vLLM runs *lower* values first (``vllm/v1/core/sched/request_queue.py``,
``PriorityRequestQueue`` orders by ``(priority, arrival_time)``) while
``RequestHints.priority`` uses the contract's "higher runs first", so :meth:`decorate`
sends it negated. vLLM has no abort endpoint: the proxy aborts a request by
closing its connection, so :meth:`VLLMBackend.abort` is a documented no-op, as is
``release_program`` (prefix caching is automatic; nothing is pinned per program).
``usage.prompt_tokens_details.cached_tokens`` needs ``--enable-prompt-tokens-details``
(``cached_tokens_in_usage=True``; the service's setting ``vllm_cached_tokens_in_usage``).
Neither flag is visible from outside the server, so the operator states them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from thunder_scheduler.backends import _http
from thunder_scheduler.backends._prometheus import Sample, parse_samples, sum_samples
from thunder_scheduler.backends.base import (
    BackendCapabilities,
    BackendInfo,
    BackendKind,
    BackendLoad,
    BackendUnavailable,
    RequestHints,
)

__all__ = ["VLLMBackend"]

_CACHE_INFO = "vllm:cache_config_info"
_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


class VLLMBackend:
    """A vLLM OpenAI-compatible server reached over HTTP."""

    kind = BackendKind.VLLM

    def __init__(
        self,
        name: str,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        priority_scheduling: bool = False,
        cached_tokens_in_usage: bool = False,
        timeout_s: float = _http.DEFAULT_CONTROL_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self.capabilities = BackendCapabilities(
            abort_by_request_id=False,
            request_priority=priority_scheduling,
            sessions=False,
            slot_offload=False,
            prefix_warmup=True,
            cached_tokens_in_usage=cached_tokens_in_usage,
        )

    async def _samples(self) -> list[Sample]:
        try:
            response = await _http.send(
                self._http, self.name, "GET", f"{self.base_url}/metrics", timeout_s=self._timeout_s
            )
        except _http.EngineHTTPError as exc:
            raise BackendUnavailable(
                self.name,
                f"/metrics answered HTTP {exc.status_code}: vLLM's KV capacity is only "
                "published there (vllm:cache_config_info)",
            ) from exc
        return parse_samples(self.name, response.text)

    def _engine_capacities(self, samples: list[Sample]) -> dict[str, int]:
        """Capacity in tokens per engine index (``""`` when there is no ``engine`` label)."""
        infos = [s.labels for s in samples if s.name == _CACHE_INFO]
        if not infos:
            raise BackendUnavailable(
                self.name,
                f"/metrics has no {_CACHE_INFO}: cannot size the KV pool "
                "(is stats logging off, --disable-log-stats?)",
            )
        capacities: dict[str, int] = {}
        for labels in infos:
            capacities[labels.get("engine", "")] = self._capacity_of(labels)
        return capacities

    def _capacity_of(self, labels: Mapping[str, str]) -> int:
        for key in ("block_size", "num_gpu_blocks"):
            if labels.get(key) in (None, "", "None", "null"):
                raise BackendUnavailable(
                    self.name,
                    f"{_CACHE_INFO} label {key} is {labels.get(key)!r}: "
                    "the KV cache is not allocated yet or the label is missing",
                )
        block = _http.positive_int(self.name, f"{_CACHE_INFO} block_size", labels["block_size"])
        blocks = _http.positive_int(
            self.name, f"{_CACHE_INFO} num_gpu_blocks", labels["num_gpu_blocks"]
        )
        return block * blocks

    async def probe(self) -> BackendInfo:
        samples = await self._samples()
        capacities = self._engine_capacities(samples)
        first = next(s.labels for s in samples if s.name == _CACHE_INFO)
        page_size = _http.positive_int(self.name, f"{_CACHE_INFO} block_size", first["block_size"])
        models_data = await _http.get_json(
            self._http, self.name, f"{self.base_url}/v1/models", timeout_s=self._timeout_s
        )
        entries = _http.as_mapping(self.name, "/v1/models", models_data).get("data")
        models: list[str] = []
        max_context: int | None = None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                models.append(entry["id"])
                if isinstance(entry.get("max_model_len"), int):
                    max_context = entry["max_model_len"]
        return BackendInfo(
            capacity_tokens=sum(capacities.values()),
            page_size_tokens=page_size,
            models=tuple(models),
            max_context_tokens=max_context,
            raw={"cache_config_info": [dict(s.labels) for s in samples if s.name == _CACHE_INFO]},
        )

    async def load(self) -> BackendLoad:
        samples = await self._samples()
        used: int | None = None
        try:
            capacities = self._engine_capacities(samples)
        except BackendUnavailable:
            capacities = {}
        usage = [s for s in samples if s.name in _USAGE_NAMES]
        if capacities and usage:
            used = round(
                sum(s.value * capacities.get(s.labels.get("engine", ""), 0) for s in usage)
            )
        running = sum_samples(samples, "vllm:num_requests_running")
        waiting = sum_samples(samples, "vllm:num_requests_waiting")
        queries = sum_samples(
            samples, "vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"
        )
        hits = sum_samples(
            samples, "vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"
        )
        return BackendLoad(
            used_tokens=used,
            running_requests=None if running is None else int(running),
            waiting_requests=None if waiting is None else int(waiting),
            cache_hit_rate=(hits / queries) if hits is not None and queries else None,
            prompt_tokens_total=sum_samples(samples, "vllm:prompt_tokens_total"),
            cached_tokens_total=hits,
        )

    def decorate(self, path: str, body: dict[str, Any], hints: RequestHints) -> dict[str, Any]:
        body["request_id"] = hints.request_id
        if hints.priority is not None and self.capabilities.request_priority:
            body["priority"] = -hints.priority  # vLLM: lower runs first
        return body

    def request_headers(self, hints: RequestHints) -> dict[str, str]:
        return {"X-Request-Id": hints.request_id}

    async def abort(self, request_id: str) -> None:
        """No-op: vLLM aborts a request when its client connection closes."""

    async def release_program(
        self, program_id: str, session_id: str | None, slot_id: int | None
    ) -> None:
        """No-op: vLLM's prefix cache is automatic and holds nothing per program."""

    async def aclose(self) -> None:
        """Nothing owned: the HTTP client is injected and closed by its owner."""
