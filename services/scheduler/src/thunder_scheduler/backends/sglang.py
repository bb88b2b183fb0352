"""SGLang 0.5.x backend: capacity from ``/server_info``, load from ``/v1/loads``.

Field names were read in the sglang 0.5.23 wheel:

* ``GET /server_info`` (``entrypoints/http_server.py::server_info``) returns the
  resolved server args (``page_size``, ``dp_size``, ``served_model_name``,
  ``context_length``, ``enable_cache_report``, ``enable_priority_scheduling``, ...),
  merged with the scheduler's start-up info (``max_total_num_tokens``,
  ``max_req_input_len``; ``managers/data_parallel_controller.py`` takes them from
  DP rank 0, so they are per rank) and ``internal_states``: one dict per DP rank whose
  ``memory_usage.token_capacity`` is that rank's KV pool
  (``managers/scheduler_components/internal_state.py``).
  Capacity = the sum of ``token_capacity`` over ranks when every rank reports it,
  else ``max_total_num_tokens * dp_size``. ``/get_server_info`` (deprecated alias,
  older 0.5 releases) is tried when ``/server_info`` is missing.
* ``GET /v1/loads?include=core&format=json`` (``entrypoints/v1_loads.py``,
  ``managers/load_snapshot.py::LoadSnapshot``): ``loads`` is a list with one entry
  per DP rank holding ``num_running_reqs``, ``num_waiting_reqs``, ``num_used_tokens``,
  ``cache_hit_rate``, ... We sum counts over ranks and average the hit rate
  (``include=core`` carries every field we read; ``all`` adds memory/spec sections).
* ``GET /metrics`` (only with ``--enable-metrics``): counters
  ``sglang:prompt_tokens_total`` and ``sglang:cached_tokens_total``
  (``observability/metrics_collector.py``). Without the flag those two are ``None``.
* ``POST /abort_request {"rid"}`` (``AbortReq``); an unknown rid is ignored by the
  engine. With ``n > 1`` SGLang expands a string ``rid`` to ``rid_0 .. rid_{n-1}``
  (``GenerateReqInput._normalize_rid``), which an abort of ``rid`` does not reach.
* ``POST /open_session {"capacity_of_str_len", "session_id"}`` and
  ``POST /close_session {"session_id"}``. A top-level ``session_id`` on a request only
  matters with ``--enable-session-radix-cache`` (``managers/scheduler.py``: a
  "radix-native session" request marks the radix nodes it reaches as referenced by the
  session, so eviction takes unreferenced KV first, until ``/close_session`` releases
  them). Capability ``sessions`` is therefore that flag, read from ``/server_info``;
  without it a session would buy nothing and cost a round trip per program. The
  driver opens one session per program (:meth:`SGLangBackend.open_session`) before its
  first request carries ``session_id`` and closes it in ``release_program``.

* HiCache (``--enable-hierarchical-cache``): the host pool's size in tokens is computed from
  ``/server_info`` as SGLang sizes it (``sglang_hicache.py``), else read from the gauge
  ``sglang:hicache_host_total_tokens`` on ``/metrics``; it becomes
  ``BackendInfo.host_capacity_tokens`` (0 when HiCache is off or its size cannot be read: the
  engine is then scheduled without a host tier, and a log line says why). Capability
  ``hierarchical_cache`` says the tier is there (docs/host-tier.md: what the levers do with it).

Request fields (``entrypoints/openai/protocol.py``, ``GenerateReqInput``): ``rid``,
``priority`` and ``session_id`` on ``/generate``, ``/v1/chat/completions`` and
``/v1/completions``.

Priority (capability ``request_priority`` = ``--enable-priority-scheduling``):
``RequestHints.priority`` follows the contract's convention, higher runs first (and a
paused or marked program gets a lower one). SGLang's queue runs higher values first by
default and lower values first with ``--schedule-low-priority-values-first``
(``managers/scheduler.py::_set_or_validate_priority``), so :meth:`decorate` sends the
priority as is, or negated under that flag. ``--radix-eviction-policy priority`` evicts
lower values first whatever that flag says, so under the flag queue order and eviction
order disagree; we follow the queue order, the lever the flag exists to set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import httpx

from thunder_scheduler.backends import _http
from thunder_scheduler.backends._prometheus import parse_samples, sum_samples
from thunder_scheduler.backends.base import (
    BackendCapabilities,
    BackendInfo,
    BackendKind,
    BackendLoad,
    BackendUnavailable,
    RequestHints,
)
from thunder_scheduler.backends.sglang_hicache import (
    HOST_TOTAL_TOKENS_METRIC,
    HostTierUnknown,
    host_pool_tokens,
)

__all__ = ["SGLangBackend"]

log = logging.getLogger(__name__)

SESSION_CAPACITY_OF_STR_LEN = 1 << 20
"""``capacity_of_str_len`` sent with ``/open_session``: SGLang sizes the session's text
buffer from it; 1 MiB characters covers any context the engines here serve (our choice)."""


class SGLangBackend:
    """An SGLang server reached over HTTP."""

    kind = BackendKind.SGLANG

    def __init__(
        self,
        name: str,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = _http.DEFAULT_CONTROL_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self._capacity_tokens: int | None = None
        self._priority_sign = 1
        # Updated by probe() from the server's flags; these are the defaults of a server
        # started without --enable-cache-report / --enable-priority-scheduling /
        # --enable-session-radix-cache.
        self.capabilities = BackendCapabilities(
            abort_by_request_id=True,
            request_priority=False,
            sessions=False,
            slot_offload=False,
            prefix_warmup=True,
            cached_tokens_in_usage=False,
            hierarchical_cache=False,
        )

    async def _server_info(self) -> dict[str, Any]:
        try:
            data = await _http.get_json(
                self._http, self.name, f"{self.base_url}/server_info", timeout_s=self._timeout_s
            )
        except _http.EngineHTTPError as exc:
            if exc.status_code != 404:
                raise
            data = await _http.get_json(
                self._http,
                self.name,
                f"{self.base_url}/get_server_info",
                timeout_s=self._timeout_s,
            )
        return _http.as_mapping(self.name, "/server_info", data)

    async def probe(self) -> BackendInfo:
        info = await self._server_info()
        page_size = _http.positive_int(
            self.name, "/server_info page_size", info.get("page_size", 1) or 1
        )
        capacity = self._capacity_from(info)
        served = info.get("served_model_name") or info.get("model_path")
        if isinstance(served, str):
            models: tuple[str, ...] = (served,)
        elif isinstance(served, list):
            models = tuple(str(m) for m in served)
        else:
            models = ()
        context = info.get("context_length")
        if not isinstance(context, int) or context <= 0:
            context = info.get("max_req_input_len")
        max_context = context if isinstance(context, int) and context > 0 else None
        host_tokens = await self._host_capacity(info)
        self.capabilities = replace(
            self.capabilities,
            cached_tokens_in_usage=bool(info.get("enable_cache_report", False)),
            request_priority=bool(info.get("enable_priority_scheduling", False)),
            sessions=bool(info.get("enable_session_radix_cache", False)),
            hierarchical_cache=host_tokens > 0,
        )
        self._priority_sign = -1 if info.get("schedule_low_priority_values_first") else 1
        self._capacity_tokens = capacity
        return BackendInfo(
            capacity_tokens=capacity,
            page_size_tokens=page_size,
            models=models,
            max_context_tokens=max_context,
            host_capacity_tokens=host_tokens,
            raw=info,
        )

    async def _host_capacity(self, info: dict[str, Any]) -> int:
        """HiCache's host pool in tokens: from ``/server_info``, else the engine's gauge, else 0
        (logged: the engine is scheduled without a host tier, never refused for it)."""
        try:
            return host_pool_tokens(info)
        except HostTierUnknown as exc:
            reason = str(exc)
        gauge: float | None = None
        try:
            response = await _http.send(
                self._http, self.name, "GET", f"{self.base_url}/metrics", timeout_s=self._timeout_s
            )
            gauge = sum_samples(parse_samples(self.name, response.text), HOST_TOTAL_TOKENS_METRIC)
        except BackendUnavailable as exc:
            reason += f"; /metrics: {exc.reason}"
        if gauge is not None and math.isfinite(gauge) and gauge >= 1:
            log.info("backend %s: HiCache host pool from %s (%s in /server_info): %d tokens",
                     self.name, HOST_TOTAL_TOKENS_METRIC, reason, int(gauge))
            return int(gauge)
        log.warning("backend %s: HiCache is on but its host pool size is unknown (%s; no %s "
                    "gauge): scheduling it without a host tier", self.name, reason,
                    HOST_TOTAL_TOKENS_METRIC)
        return 0

    def _capacity_from(self, info: dict[str, Any]) -> int:
        states = info.get("internal_states")
        if isinstance(states, list) and states:
            per_rank: list[int] = []
            for state in states:
                memory = state.get("memory_usage") if isinstance(state, dict) else None
                token_capacity = memory.get("token_capacity") if isinstance(memory, dict) else None
                if not isinstance(token_capacity, int) or token_capacity <= 0:
                    break
                per_rank.append(token_capacity)
            else:
                return sum(per_rank)
        if "max_total_num_tokens" not in info:
            raise BackendUnavailable(
                self.name,
                "/server_info has neither internal_states[].memory_usage.token_capacity nor "
                "max_total_num_tokens: cannot size the KV pool (is this SGLang 0.5.x?)",
            )
        per_rank_tokens = _http.positive_int(
            self.name, "/server_info max_total_num_tokens", info["max_total_num_tokens"]
        )
        dp_size = _http.positive_int(self.name, "/server_info dp_size", info.get("dp_size", 1) or 1)
        return per_rank_tokens * dp_size

    async def load(self) -> BackendLoad:
        running: int | None = None
        waiting: int | None = None
        used: int | None = None
        hit_rate: float | None = None
        try:
            data = await _http.get_json(
                self._http,
                self.name,
                f"{self.base_url}/v1/loads",
                params={"include": "core", "format": "json"},
                timeout_s=self._timeout_s,
            )
        except _http.EngineHTTPError as exc:
            if exc.status_code != 404:
                raise
            loads: list[dict[str, Any]] = []  # older 0.5 release: fall back to /metrics
        else:
            raw_loads = _http.as_mapping(self.name, "/v1/loads", data).get("loads")
            if not isinstance(raw_loads, list):
                raise BackendUnavailable(self.name, f"/v1/loads has no 'loads' list: {data!r:.200}")
            loads = [entry for entry in raw_loads if isinstance(entry, dict)]
        if loads:
            try:
                running = sum(int(entry.get("num_running_reqs", 0)) for entry in loads)
                waiting = sum(int(entry.get("num_waiting_reqs", 0)) for entry in loads)
                used = sum(int(entry.get("num_used_tokens", 0)) for entry in loads)
                hit_rate = sum(float(entry.get("cache_hit_rate", 0.0)) for entry in loads) / len(
                    loads
                )
            except (TypeError, ValueError) as exc:
                raise BackendUnavailable(
                    self.name, f"/v1/loads has a non-numeric field: {exc}"
                ) from exc

        prompt_total: float | None = None
        cached_total: float | None = None
        try:
            response = await _http.send(
                self._http, self.name, "GET", f"{self.base_url}/metrics", timeout_s=self._timeout_s
            )
        except _http.EngineHTTPError:
            pass  # no --enable-metrics: counters stay unknown
        else:
            samples = parse_samples(self.name, response.text)
            prompt_total = sum_samples(samples, "sglang:prompt_tokens_total")
            cached_total = sum_samples(samples, "sglang:cached_tokens_total")
            if not loads:
                running_f = sum_samples(samples, "sglang:num_running_reqs")
                waiting_f = sum_samples(samples, "sglang:num_queue_reqs")
                used_f = sum_samples(samples, "sglang:num_used_tokens")
                running = None if running_f is None else int(running_f)
                waiting = None if waiting_f is None else int(waiting_f)
                used = None if used_f is None else int(used_f)
                hit_rate = sum_samples(samples, "sglang:cache_hit_rate")
        return BackendLoad(
            used_tokens=used,
            running_requests=running,
            waiting_requests=waiting,
            cache_hit_rate=hit_rate,
            prompt_tokens_total=prompt_total,
            cached_tokens_total=cached_total,
        )

    def decorate(self, path: str, body: dict[str, Any], hints: RequestHints) -> dict[str, Any]:
        body["rid"] = hints.request_id
        if hints.priority is not None and self.capabilities.request_priority:
            body["priority"] = hints.priority * self._priority_sign
        if hints.session_id is not None and self.capabilities.sessions:
            body["session_id"] = hints.session_id
        return body

    def request_headers(self, hints: RequestHints) -> dict[str, str]:
        return {}

    async def abort(self, request_id: str) -> None:
        """``POST /abort_request {"rid"}``; the engine ignores a rid it does not know."""
        await _http.send(
            self._http,
            self.name,
            "POST",
            f"{self.base_url}/abort_request",
            json_body={"rid": request_id},
            timeout_s=self._timeout_s,
        )

    async def open_session(self, session_id: str) -> str:
        """``POST /open_session``; returns the engine's session id."""
        response = await _http.send(
            self._http,
            self.name,
            "POST",
            f"{self.base_url}/open_session",
            json_body={
                "capacity_of_str_len": SESSION_CAPACITY_OF_STR_LEN,
                "session_id": session_id,
            },
            timeout_s=self._timeout_s,
        )
        opened = _http.decode_json(self.name, "/open_session", response)
        if not isinstance(opened, str):
            raise BackendUnavailable(self.name, f"/open_session returned {opened!r:.200}")
        return opened

    async def release_program(
        self, program_id: str, session_id: str | None, slot_id: int | None
    ) -> None:
        """Close the program's session, if it had one; an unknown session is not an error."""
        if session_id is None:
            return
        try:
            await _http.send(
                self._http,
                self.name,
                "POST",
                f"{self.base_url}/close_session",
                json_body={"session_id": session_id},
                timeout_s=self._timeout_s,
            )
        except _http.EngineHTTPError as exc:
            if exc.status_code >= 500:
                raise

    async def aclose(self) -> None:
        """Nothing owned: the HTTP client is injected and closed by its owner."""
