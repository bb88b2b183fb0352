"""SGLang HiCache's host pool as the backend reads it from ``/server_info`` (sglang 0.5.23's
sizing, ``backends/sglang_hicache.py``), and what happens when it cannot: no host tier, a log
line, never a failed probe."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.backends.sglang_hicache import HostTierUnknown, host_pool_tokens
from thunder_testkit.engines import FakeSGLang

HICACHE = {"enable_hierarchical_cache": True, "hicache_ratio": 2.0, "hicache_size": 0,
           "hicache_write_policy": "write_through", "hicache_host_memory_mode": "cache"}


def server_info(**extra: Any) -> dict[str, Any]:
    """A 0.5.23-shaped answer: 100k device tokens per rank, 16-token pages, 40.1 GiB of KV."""
    dp = int(extra.pop("dp_size", 1))
    state = {"memory_usage": {"kvcache": 40.1, "token_capacity": 100_000}}
    return {"page_size": 16, "dp_size": dp, "max_total_num_tokens": 100_000,
            "internal_states": [dict(state) for _ in range(dp)], **HICACHE, **extra}


def test_off_means_no_host_tier() -> None:
    assert host_pool_tokens(server_info(enable_hierarchical_cache=False)) == 0
    assert host_pool_tokens({"page_size": 16, "max_total_num_tokens": 100_000}) == 0


def test_ratio_sizes_the_pool_like_sglang_with_its_padding_page() -> None:
    # HostKVCache.__init__: int(100_000 * 2.0) tokens, then (size // page + 1) pages
    assert host_pool_tokens(server_info()) == (200_000 // 16 + 1) * 16


def test_every_dp_rank_has_its_own_pool() -> None:
    assert host_pool_tokens(server_info(dp_size=3)) == 3 * (200_000 // 16 + 1) * 16


def test_a_rank_s_resolved_ratio_wins_over_the_launch_value() -> None:
    info = server_info()
    info["internal_states"][0]["hicache_ratio"] = 0.5  # lowered by HiCache auto-sizing
    assert host_pool_tokens(info) == (50_000 // 16 + 1) * 16


def test_size_in_gb_uses_the_device_pool_s_bytes_per_token() -> None:
    bytes_per_token = 40.1 * 1024**3 / 100_000
    expected = (int(100e9 // bytes_per_token) // 16 + 1) * 16
    assert host_pool_tokens(server_info(hicache_size=100)) == expected


def test_without_internal_states_the_launch_values_are_used() -> None:
    info = server_info(dp_size=2)
    del info["internal_states"]
    assert host_pool_tokens(info) == 2 * (200_000 // 16 + 1) * 16


def test_buffer_only_host_memory_keeps_nothing() -> None:
    assert host_pool_tokens(server_info(hicache_host_memory_mode="buffer_only")) == 0


@pytest.mark.parametrize("extra", [
    {"hicache_ratio": "two"},
    {"hicache_ratio": None},
    {"hicache_ratio": -1.0},
    {"hicache_ratio": float("nan")},
    {"hicache_size": 50, "internal_states": [{"memory_usage": {"token_capacity": 100_000}}]},
    {"internal_states": [{"memory_usage": {"kvcache": 40.1}}]},
    {"page_size": -16},
])
def test_malformed_fields_are_reported_not_guessed(extra: dict[str, Any]) -> None:
    with pytest.raises(HostTierUnknown):
        host_pool_tokens(server_info(**extra))


def _backend(fake: FakeSGLang) -> SGLangBackend:
    return SGLangBackend("gpu1", "http://gpu1:30000", httpx.AsyncClient(transport=fake.transport()))


async def test_probe_reports_the_host_pool_and_the_capability() -> None:
    backend = _backend(FakeSGLang(max_total_num_tokens=100_000, page_size=16,
                                  server_info_extra=HICACHE))
    info = await backend.probe()
    assert info.host_capacity_tokens == (200_000 // 16 + 1) * 16
    assert backend.capabilities.hierarchical_cache


async def test_probe_without_hicache_reports_no_host_tier() -> None:
    backend = _backend(FakeSGLang())
    info = await backend.probe()
    assert info.host_capacity_tokens == 0
    assert not backend.capabilities.hierarchical_cache


async def test_unreadable_server_info_falls_back_to_the_engine_s_gauge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeSGLang(server_info_extra={**HICACHE, "hicache_ratio": "lots"},
                      metrics_extra=['sglang:hicache_host_total_tokens{dp_rank="0"} 123456'])
    with caplog.at_level(logging.INFO, logger="thunder_scheduler.backends.sglang"):
        info = await _backend(fake).probe()
    assert info.host_capacity_tokens == 123_456
    assert "hicache_ratio is not a number" in caplog.text


@pytest.mark.parametrize("metrics", [
    {"status_overrides": {"/metrics": 404}},
    {"metrics_extra": ['sglang:hicache_host_total_tokens{dp_rank="0"} +Inf']},
    {"metrics_extra": ['sglang:hicache_host_total_tokens{dp_rank="0"} NaN']},
], ids=["no-metrics", "inf", "nan"])
async def test_unreadable_size_and_no_gauge_degrade_to_no_host_tier_with_a_log_line(
    caplog: pytest.LogCaptureFixture, metrics: dict[str, Any],
) -> None:
    fake = FakeSGLang(server_info_extra={**HICACHE, "hicache_ratio": None}, **metrics)
    backend = _backend(fake)
    with caplog.at_level(logging.WARNING, logger="thunder_scheduler.backends.sglang"):
        info = await backend.probe()
    assert info.capacity_tokens == fake.max_total_num_tokens  # the engine is still usable
    assert info.host_capacity_tokens == 0
    assert not backend.capabilities.hierarchical_cache
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "without a host tier" in record.getMessage()
    assert "neither hicache_ratio nor hicache_size" in record.getMessage()
