"""Fake SGLang, vLLM and llama.cpp control planes for ``httpx.MockTransport`` tests.

These are fakes, for fault injection and socket-free tests of the backends: each
answers the control-plane endpoints the backends read with bodies shaped exactly like
the real engine's (the shapes and their sources are in the docstrings of
``thunder_scheduler.backends.sglang``, ``vllm`` and ``llamacpp``), holds a little mutable state the
test sets (pool size, running requests, counters), records the control calls it
received, and can be taken ``down`` (every request raises ``httpx.ConnectError``,
as a stopped engine does). They serve no completions: real traffic in tests goes to
a real ``llama-server``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["FakeEngine", "FakeLlamaServer", "FakeSGLang", "FakeVLLM"]


@dataclass
class FakeEngine:
    """Common state: ``down`` simulates a dead engine; ``calls`` records (method, path, body)."""

    down: bool = False
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    status_overrides: dict[str, int] = field(default_factory=dict)
    """Path -> HTTP status to answer instead (e.g. ``{"/metrics": 404}``)."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content.decode(errors="replace")
        path = request.url.path
        self.calls.append((request.method, path, body))
        if path in self.status_overrides:
            status = self.status_overrides[path]
            return httpx.Response(status, json={"detail": f"fake status {status}"})
        return self.route(request, path, body)

    def route(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})


@dataclass
class FakeSGLang(FakeEngine):
    """SGLang 0.5.23: ``/server_info``, ``/v1/loads``, ``/metrics``, abort and sessions."""

    max_total_num_tokens: int = 100_000
    page_size: int = 16
    dp_size: int = 1
    running_per_rank: int = 0
    waiting_per_rank: int = 0
    used_tokens_per_rank: int = 0
    cache_hit_rate: float = 0.0
    prompt_tokens_total: float = 0.0
    cached_tokens_total: float = 0.0
    open_sessions: set[str] = field(default_factory=set)
    enable_priority_scheduling: bool = False
    schedule_low_priority_values_first: bool = False
    enable_session_radix_cache: bool = False
    server_info_extra: dict[str, Any] = field(default_factory=dict)
    """Merged into ``/server_info`` (e.g. the HiCache flags)."""
    metrics_extra: list[str] = field(default_factory=list)
    """Sample lines appended to ``/metrics``."""

    def route(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        if path == "/server_info":
            states = [
                {
                    "dp_size": self.dp_size,
                    "memory_usage": {
                        "weight": 15.2,
                        "kvcache": 40.1,
                        "token_capacity": self.max_total_num_tokens,
                        "token_capacity_swa": None,
                        "graph": {},
                    },
                    "effective_max_running_requests_per_dp": 4096,
                }
                for _ in range(self.dp_size)
            ]
            return httpx.Response(
                200,
                json={
                    "model_path": "Qwen/Qwen3-8B",
                    "served_model_name": "Qwen/Qwen3-8B",
                    "page_size": self.page_size,
                    "dp_size": self.dp_size,
                    "tp_size": 1,
                    "context_length": None,
                    "enable_cache_report": True,
                    "enable_priority_scheduling": self.enable_priority_scheduling,
                    "schedule_low_priority_values_first": self.schedule_low_priority_values_first,
                    "enable_session_radix_cache": self.enable_session_radix_cache,
                    "max_total_num_tokens": self.max_total_num_tokens,
                    "max_req_input_len": 40_955,
                    "startup_time": 12.5,
                    "internal_states": states,
                    "version": "0.5.23",
                    "frontend": "python",
                    **self.server_info_extra,
                },
            )
        if path == "/v1/loads":
            loads = [
                {
                    "timestamp": 1.0,
                    "dp_rank": rank,
                    "num_running_reqs": self.running_per_rank,
                    "num_waiting_reqs": self.waiting_per_rank,
                    "num_waiting_uncached_tokens": 0,
                    "num_used_tokens": self.used_tokens_per_rank,
                    "num_total_tokens": self.used_tokens_per_rank,
                    "num_active_tokens": self.used_tokens_per_rank,
                    "num_prealloc_ready_tokens": 0,
                    "max_total_num_tokens": self.max_total_num_tokens,
                    "max_running_requests": 4096,
                    "token_usage": self.used_tokens_per_rank / self.max_total_num_tokens,
                    "gen_throughput": 0.0,
                    "cache_hit_rate": self.cache_hit_rate,
                    "utilization": 0.0,
                    "total_prefill_uncached_tokens": 0,
                    "total_prefill_busy_us": 0,
                    "decode_moments": None,
                }
                for rank in range(self.dp_size)
            ]
            return httpx.Response(
                200,
                json={
                    "timestamp": "2026-01-01T00:00:00+00:00",
                    "version": "0.5.23",
                    "accelerator": "NVIDIA H100",
                    "num_accelerators": 1,
                    "loads": loads,
                },
            )
        if path == "/metrics":
            lines = []
            for rank in range(self.dp_size):
                labels = f'model_name="Qwen/Qwen3-8B",dp_rank="{rank}"'
                prompt = self.prompt_tokens_total / self.dp_size
                cached = self.cached_tokens_total / self.dp_size
                lines += [
                    f"sglang:prompt_tokens_total{{{labels}}} {prompt}",
                    f"sglang:cached_tokens_total{{{labels}}} {cached}",
                    f"sglang:num_running_reqs{{{labels}}} {self.running_per_rank}",
                    f"sglang:num_queue_reqs{{{labels}}} {self.waiting_per_rank}",
                ]
            text = (
                "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.\n"
                "# TYPE sglang:prompt_tokens_total counter\n"
                + "\n".join(lines + self.metrics_extra) + "\n"
            )
            return httpx.Response(200, text=text)
        if path == "/abort_request" and request.method == "POST":
            return httpx.Response(200)
        if path == "/open_session":
            session_id = str(body.get("session_id")) if isinstance(body, dict) else ""
            if session_id in self.open_sessions:
                return httpx.Response(
                    400,
                    json={"object": "error", "message": "Failed to open the session.", "code": 400},
                )
            self.open_sessions.add(session_id)
            return httpx.Response(200, json=session_id)
        if path == "/close_session":
            if isinstance(body, dict):
                self.open_sessions.discard(str(body.get("session_id")))
            return httpx.Response(200)
        return super().route(request, path, body)


@dataclass
class FakeVLLM(FakeEngine):
    """vLLM: ``/metrics`` (``vllm:cache_config_info`` and load gauges) and ``/v1/models``."""

    block_size: int = 16
    num_gpu_blocks: int | None = 6250
    engines: int = 1
    kv_cache_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    prompt_tokens: float = 0.0
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    max_model_len: int = 32_768

    def route(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        if path == "/metrics":
            lines = [
                "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
                "# TYPE vllm:cache_config_info gauge",
            ]
            for engine in range(self.engines):
                lines.append(
                    f'vllm:cache_config_info{{block_size="{self.block_size}",cache_dtype="auto",'
                    f'enable_prefix_caching="True",engine="{engine}",gpu_memory_utilization="0.9",'
                    f'num_cpu_blocks="None",num_gpu_blocks="{self.num_gpu_blocks}",'
                    f'num_gpu_blocks_override="None",sliding_window="None"}} 1.0'
                )
            for engine in range(self.engines):
                labels = f'engine="{engine}",model_name="{self.model}"'
                queries = self.prefix_queries / self.engines
                lines += [
                    f"vllm:num_requests_running{{{labels}}} {self.running / self.engines}",
                    f"vllm:num_requests_waiting{{{labels}}} {self.waiting / self.engines}",
                    f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv_cache_usage}",
                    f"vllm:prefix_cache_queries_total{{{labels}}} {queries}",
                    f"vllm:prefix_cache_hits_total{{{labels}}} {self.prefix_hits / self.engines}",
                    f"vllm:prompt_tokens_total{{{labels}}} {self.prompt_tokens / self.engines}",
                ]
            return httpx.Response(200, text="\n".join(lines) + "\n")
        if path == "/v1/models":
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [
                        {
                            "id": self.model,
                            "object": "model",
                            "created": 0,
                            "owned_by": "vllm",
                            "root": self.model,
                            "parent": None,
                            "max_model_len": self.max_model_len,
                        }
                    ],
                },
            )
        return super().route(request, path, body)


@dataclass
class FakeLlamaServer(FakeEngine):
    """llama-server: ``/props``, ``/slots``, ``/metrics`` and slot actions (no files)."""

    n_slots: int = 2
    slot_n_ctx: int = 8192
    slots_endpoint: bool = True
    slot_save_path: bool = True
    processing: set[int] = field(default_factory=set)
    slot_tokens: dict[int, int] = field(default_factory=dict)
    saved: dict[str, int] = field(default_factory=dict)

    def route(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        if path == "/props":
            return httpx.Response(
                200,
                json={
                    "default_generation_settings": {"params": {}, "n_ctx": self.slot_n_ctx},
                    "total_slots": self.n_slots,
                    "model_alias": "smollm2",
                    "model_path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "endpoint_slots": self.slots_endpoint,
                    "endpoint_props": False,
                    "endpoint_metrics": True,
                    "is_sleeping": False,
                },
            )
        if path == "/slots" and request.method == "GET":
            if not self.slots_endpoint:
                return _llama_error(
                    501, "This server does not support slots endpoint. Start it with `--slots`"
                )
            return httpx.Response(200, json=[self._slot_json(i) for i in range(self.n_slots)])
        if path.startswith("/slots/") and request.method == "POST":
            return self._slot_action(request, path, body)
        if path == "/metrics":
            cached = sum(self.slot_tokens.values()) / 2
            text = (
                "# TYPE llamacpp:prompt_tokens_total counter\n"
                f"llamacpp:prompt_tokens_total {sum(self.slot_tokens.values())}\n"
                "# TYPE llamacpp:prompt_tokens_cached_total counter\n"
                f"llamacpp:prompt_tokens_cached_total {cached}\n"
                "# TYPE llamacpp:requests_processing gauge\n"
                f"llamacpp:requests_processing {len(self.processing)}\n"
                "# TYPE llamacpp:requests_deferred gauge\n"
                "llamacpp:requests_deferred 0\n"
            )
            return httpx.Response(200, text=text)
        return super().route(request, path, body)

    def _slot_json(self, slot_id: int) -> dict[str, Any]:
        slot: dict[str, Any] = {
            "id": slot_id,
            "n_ctx": self.slot_n_ctx,
            "speculative": False,
            "is_processing": slot_id in self.processing,
        }
        if slot_id in self.slot_tokens:
            slot["id_task"] = 7
            slot["n_prompt_tokens"] = self.slot_tokens[slot_id]
        return slot

    def _slot_action(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        if not self.slot_save_path:
            return _llama_error(
                501,
                "This server does not support slots action. Start it with `--slot-save-path`",
            )
        try:
            slot_id = int(path.rsplit("/", 1)[1])
        except ValueError:
            return _llama_error(400, "Invalid slot ID")
        action = request.url.params.get("action")
        if action == "erase" and not 0 <= slot_id < self.n_slots:
            # measured on the real server: erasing a slot that does not exist answers 200
            return httpx.Response(200, json={"id_slot": slot_id, "n_erased": 0})
        if not 0 <= slot_id < self.n_slots:
            return _llama_error(400, "Invalid id_slot")
        filename = body.get("filename", "") if isinstance(body, dict) else ""
        if action == "save":
            n = self.slot_tokens.get(slot_id, 0)
            self.saved[filename] = n
            return httpx.Response(
                200,
                json={
                    "id_slot": slot_id,
                    "filename": filename,
                    "n_saved": n,
                    "n_written": n * 23_000,
                    "timings": {"save_ms": 8.5},
                },
            )
        if action == "restore":
            if filename not in self.saved:
                return _llama_error(
                    400,
                    "Unable to restore slot: No available space in KV cache "
                    "or invalid slot save file",
                )
            self.slot_tokens[slot_id] = self.saved[filename]
            n = self.saved[filename]
            return httpx.Response(
                200,
                json={
                    "id_slot": slot_id,
                    "filename": filename,
                    "n_restored": n,
                    "n_read": n * 23_000,
                    "timings": {"restore_ms": 2.5},
                },
            )
        if action == "erase":
            n = self.slot_tokens.pop(slot_id, 0)
            return httpx.Response(200, json={"id_slot": slot_id, "n_erased": n})
        return _llama_error(400, "Invalid action")


def _llama_error(status: int, message: str) -> httpx.Response:
    kind = {400: "invalid_request_error", 501: "not_supported_error"}.get(status, "server_error")
    return httpx.Response(
        status, json={"error": {"code": status, "message": message, "type": kind}}
    )
