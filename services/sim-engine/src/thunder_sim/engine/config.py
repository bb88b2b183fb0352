"""Engine configuration: SGLang's scheduling knobs, with SGLang 0.5.23 defaults.

Sources (SGLang 0.5.23 wheel):
- ``chunked_prefill_size`` 8192 and ``max_prefill_tokens`` 16384: ``arg_groups/memory_hook.py``
  (8192 for 60-160 GiB GPUs) and ``arg_groups/fields/schedule.py``.
- ``new_token_ratio_*``, ``retract_decode_steps``, ``clip_max_new_tokens``: ``environ.py``
  (``SGLANG_INIT_NEW_TOKEN_RATIO`` 0.7, ``SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR`` 0.14,
  ``SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS`` 600, ``SGLANG_RETRACT_DECODE_STEPS`` 20,
  ``SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION`` 4096).
- ``page_tokens``: SGLang's ``--page-size`` (1 by default); the simulator's unit is a block of a
  trace, 64 tokens, so the default here is 64.
- ``kv_pool_tokens`` and ``max_running_requests`` come from a preset (``costmodel.presets``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from thunder_sim.costmodel.presets import get_preset, sglang_max_running_requests
from thunder_sim.engine.radix_cache import EvictionPolicy


@dataclass(frozen=True, slots=True)
class EngineConfig:
    kv_pool_tokens: int                       # C: KV pool capacity in tokens
    max_running_requests: int
    page_tokens: int = 64                     # page == block size
    chunked_prefill_size: int = 8192
    max_prefill_tokens: int = 16384
    eviction_policy: EvictionPolicy = "lru"   # --radix-eviction-policy
    enable_priority_scheduling: bool = False  # --enable-priority-scheduling
    schedule_low_priority_values_first: bool = False
    retraction_policy: Literal["length", "priority"] = "length"  # --retraction-policy
    new_token_ratio_init: float = 0.7
    new_token_ratio_min_factor: float = 0.14
    new_token_ratio_decay_steps: int = 600
    retract_decode_steps: int = 20
    clip_max_new_tokens: int = 4096
    gen_throughput_window_s: float = 5.0      # window of LoadSnapshot.gen_throughput
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.page_tokens < 1:
            raise ValueError("page_tokens must be >= 1")
        if self.kv_pool_tokens < 2 * self.page_tokens:
            raise ValueError(f"kv_pool_tokens must hold at least two pages of {self.page_tokens}")
        if self.max_running_requests < 1:
            raise ValueError("max_running_requests must be >= 1")
        if self.chunked_prefill_size < self.page_tokens:
            raise ValueError("chunked_prefill_size must be at least one page")
        if self.max_prefill_tokens < 1:
            raise ValueError("max_prefill_tokens must be >= 1")
        if not 0.0 <= self.new_token_ratio_init <= 1.0:
            raise ValueError("new_token_ratio_init must be in [0, 1]")
        if self.new_token_ratio_decay_steps < 1:
            raise ValueError("new_token_ratio_decay_steps must be >= 1")
        if self.gen_throughput_window_s <= 0:
            raise ValueError("gen_throughput_window_s must be > 0")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> EngineConfig:
        """Config of a named preset; ``overrides`` replace fields (e.g. a small pool in tests).
        When ``kv_pool_tokens`` is overridden, ``max_running_requests`` is re-derived from it
        unless it is overridden too."""
        p = get_preset(name)
        base = cls(kv_pool_tokens=p.kv_pool_tokens, max_running_requests=p.max_running_requests,
                   preset=name)
        if "kv_pool_tokens" in overrides and "max_running_requests" not in overrides:
            overrides["max_running_requests"] = sglang_max_running_requests(
                int(overrides["kv_pool_tokens"]), p.model.context_len)
        try:
            return replace(base, **overrides)
        except TypeError as exc:
            raise ValueError(f"bad EngineConfig override: {exc}") from None
