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
- HiCache (``server_args.py``): ``--enable-hierarchical-cache`` off, ``--hicache-ratio`` 2.0,
  ``--hicache-size`` 0 (GB; > 0 overrides the ratio), ``--hicache-write-policy``
  ``write_through``. ``kv_bytes_per_token``, ``num_layers`` and ``host_device_bytes_per_s`` (the
  load-back link) come from a preset; see ``host_cache.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from thunder_sim.costmodel.presets import get_preset, sglang_max_running_requests
from thunder_sim.engine.host_cache import WRITE_POLICIES, WritePolicy, host_pool_tokens
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
    enable_hierarchical_cache: bool = False   # --enable-hierarchical-cache
    hicache_ratio: float = 2.0                # --hicache-ratio (host / device pool)
    hicache_size: int = 0                     # --hicache-size, GB (> 0 overrides the ratio)
    hicache_write_policy: WritePolicy = "write_through"  # --hicache-write-policy
    kv_bytes_per_token: int = 0               # model KV bytes per token per GPU (preset)
    num_layers: int = 1                       # layers of the layer-wise load-back (preset)
    host_device_bytes_per_s: float = 64e9     # host-to-device link (preset)

    @property
    def host_pool_tokens(self) -> int:
        """Host pool size of HiCache (0 when off)."""
        if not self.enable_hierarchical_cache:
            return 0
        return host_pool_tokens(self.kv_pool_tokens, self.page_tokens, self.hicache_ratio,
                                self.hicache_size, self.kv_bytes_per_token)

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
        if self.hicache_write_policy not in WRITE_POLICIES:
            raise ValueError(f"hicache_write_policy must be one of {WRITE_POLICIES}")
        if self.hicache_ratio <= 0 or self.hicache_size < 0:
            raise ValueError("hicache_ratio must be > 0 and hicache_size >= 0")
        if self.host_device_bytes_per_s <= 0 or self.num_layers < 1:
            raise ValueError("host_device_bytes_per_s must be > 0 and num_layers >= 1")
        if self.enable_hierarchical_cache and self.hicache_size and self.kv_bytes_per_token <= 0:
            raise ValueError("hicache_size needs kv_bytes_per_token (use a preset)")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> EngineConfig:
        """Config of a named preset; ``overrides`` replace fields (e.g. a small pool in tests).
        When ``kv_pool_tokens`` is overridden, ``max_running_requests`` is re-derived from it
        unless it is overridden too."""
        p = get_preset(name)
        base = cls(kv_pool_tokens=p.kv_pool_tokens, max_running_requests=p.max_running_requests,
                   preset=name, kv_bytes_per_token=p.model.kv_bytes_per_token(p.tp),
                   num_layers=p.model.num_layers,
                   host_device_bytes_per_s=p.gpu.host_device_bytes_per_s)
        if "kv_pool_tokens" in overrides and "max_running_requests" not in overrides:
            overrides["max_running_requests"] = sglang_max_running_requests(
                int(overrides["kv_pool_tokens"]), p.model.context_len)
        try:
            return replace(base, **overrides)
        except TypeError as exc:
            raise ValueError(f"bad EngineConfig override: {exc}") from None
