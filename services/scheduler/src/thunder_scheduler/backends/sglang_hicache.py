"""SGLang HiCache's host tier as the scheduler sees it: whether it is on and how many KV tokens
its host pool holds, from ``GET /server_info``.

Read in the sglang 0.5.23 wheel (``sglang/srt/...``):

* Flags (``arg_groups/fields/memory.py``): ``enable_hierarchical_cache`` (alias
  ``--enable-hicache``), ``hicache_host_memory_mode`` (``cache``, or ``buffer_only``: host
  memory only stages transfers to a storage backend and keeps nothing), ``hicache_ratio``
  (host pool / device pool; ``None`` until ``arg_groups/hicache_hook.py::
  handle_hicache_ratio_default`` sets 2.0 in cache mode), ``hicache_size`` (GB, > 0 overrides
  the ratio), ``hicache_write_policy``.
* ``/server_info`` (``entrypoints/http_server.py::server_info``) is the resolved server args
  (``utils/common.py::build_server_info``) plus ``internal_states``, one per DP rank, built from
  ``get_context().resolved_server_args_dict()`` (``managers/scheduler_components/
  internal_state.py::get_internal_state``): the per-rank copy includes overrides made after
  start-up, such as the ratio HiCache auto-sizing lowers to fit host memory
  (``mem_cache/hicache_auto_size.py::auto_size_hicache``), so it is read first. Each rank's
  ``memory_usage`` has ``token_capacity`` (device pool, tokens) and ``kvcache`` (its size in
  GiB, ``memory_pool.py``: ``GB = 1024**3``).
* Host pool size (``mem_cache/pool_host/base.py::HostKVCache.__init__``): with
  ``hicache_size`` > 0, ``hicache_size * 1e9 // size_per_token`` tokens, else
  ``int(device_capacity_tokens * hicache_ratio)``; then one padding page is added:
  ``(size // page_size + 1) * page_size``. ``size_per_token`` is the host pool's bytes per
  token, the device pool's for the same layers, which we take as ``kvcache * 1024**3 /
  token_capacity``.

Summed over DP ranks, like the device capacity (``backends/sglang.py``). When HiCache is on but
the fields are missing or malformed, :func:`host_pool_tokens` raises :class:`HostTierUnknown`
with the reason; the backend then tries the engine's own gauge
``sglang:hicache_host_total_tokens`` (``observability/metrics_collector.py``, served with
``--enable-metrics``) and otherwise schedules the engine without a host tier, with one log line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["HOST_TOTAL_TOKENS_METRIC", "HostTierUnknown", "host_pool_tokens"]

HOST_TOTAL_TOKENS_METRIC: Final = "sglang:hicache_host_total_tokens"
"""The engine's gauge of its host pool size in tokens (``--enable-metrics``)."""

_GIB: Final = 1024**3


class HostTierUnknown(ValueError):
    """HiCache is on but ``/server_info`` does not say how big its host pool is."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HostTierUnknown(f"{what} is not a number: {value!r:.80}")
    return float(value)


def _rank_host_tokens(args: Mapping[str, Any], memory: Mapping[str, Any] | None,
                      device_tokens: int, page_size: int) -> int:
    size_gb = _number(args.get("hicache_size", 0) or 0, "hicache_size")
    if size_gb > 0:
        kvcache_gib = memory.get("kvcache") if memory is not None else None
        if kvcache_gib is None:
            raise HostTierUnknown("hicache_size is set but no memory_usage.kvcache gives the "
                                  "KV bytes per token")
        bytes_per_token = _number(kvcache_gib, "memory_usage.kvcache") * _GIB / device_tokens
        if bytes_per_token <= 0:
            raise HostTierUnknown(f"memory_usage.kvcache must be > 0, got {kvcache_gib!r}")
        size = int(size_gb * 1e9 // bytes_per_token)
    else:
        ratio = args.get("hicache_ratio")
        if ratio is None:
            raise HostTierUnknown("neither hicache_ratio nor hicache_size is set")
        ratio_f = _number(ratio, "hicache_ratio")
        if ratio_f <= 0:
            raise HostTierUnknown(f"hicache_ratio must be > 0, got {ratio!r}")
        size = int(device_tokens * ratio_f)
    return (size // page_size + 1) * page_size


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HostTierUnknown(f"{what} is not a positive integer: {value!r:.80}")
    return value


def host_pool_tokens(info: Mapping[str, Any]) -> int:
    """Host pool tokens of the SGLang server whose ``/server_info`` is ``info`` (0: HiCache off,
    or its host memory is a staging buffer); raises :class:`HostTierUnknown` when HiCache is on
    and the size cannot be read."""
    if info.get("enable_hierarchical_cache") is not True:
        return 0
    if info.get("hicache_host_memory_mode", "cache") == "buffer_only":
        return 0  # host memory only stages transfers to the storage backend
    page_size = _positive(info.get("page_size", 1) or 1, "page_size")
    states = info.get("internal_states")
    if isinstance(states, list) and states and all(isinstance(s, dict) for s in states):
        total = 0
        for state in states:
            memory = state.get("memory_usage")
            memory = memory if isinstance(memory, dict) else None
            device = _positive(memory.get("token_capacity") if memory is not None else None,
                               "internal_states[].memory_usage.token_capacity")
            args = {**info, **{k: v for k, v in state.items() if k.startswith("hicache_")}}
            total += _rank_host_tokens(args, memory, device, page_size)
        return total
    device = _positive(info.get("max_total_num_tokens"), "max_total_num_tokens")
    dp_size = _positive(info.get("dp_size", 1) or 1, "dp_size")
    return _rank_host_tokens(info, None, device, page_size) * dp_size
