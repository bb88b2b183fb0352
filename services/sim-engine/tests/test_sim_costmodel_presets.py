"""Cost model and presets: KV pool sizes from memory, roofline behaviour."""

from __future__ import annotations

import pytest

from thunder_sim.costmodel import PRESETS, PrefillChunk, RooflineCostModel, get_preset
from thunder_sim.costmodel.hardware import H100_SXM, MIB
from thunder_sim.costmodel.models import QWEN3_8B, QWEN3_235B_A22B
from thunder_sim.costmodel.presets import sglang_mem_fraction_static
from thunder_sim.engine import EngineConfig

REQUIRED = [
    "h100-qwen3-8b", "h200-qwen3-8b", "h100-llama-3.1-70b-tp4", "h200-llama-3.1-70b-tp4",
    "h100-qwen3-235b-a22b-tp8", "h200-qwen3-235b-a22b-tp8", "h100-glm-4.6-tp8", "h200-glm-4.6-tp8",
]


def test_required_presets_exist_with_positive_pools() -> None:
    for name in REQUIRED:
        p = PRESETS[name]
        assert p.kv_pool_tokens > 100_000, name
        assert 0.8 < p.mem_fraction_static < 0.95
        assert p.max_running_requests >= 1
    for gpu_pair in zip(REQUIRED[::2], REQUIRED[1::2], strict=True):
        h100, h200 = (PRESETS[n] for n in gpu_pair)
        assert h200.kv_pool_tokens > 2 * h100.kv_pool_tokens   # 141 GB vs 80 GB, weights fixed


def test_kv_pool_follows_the_memory_formula() -> None:
    p = get_preset("h100-qwen3-8b")
    frac = sglang_mem_fraction_static(H100_SXM, 1)
    # reserved = 512 + 8192*1.5 + 1/8*1024 + 256*2 MiB = 13440 MiB of 81559 MiB
    assert frac == round((81559 - 13440) / 81559, 3)
    kv_per_token = 2 * 36 * 8 * 128 * 2                       # K+V, layers, kv heads, dim, bf16
    expected = int((81559 * MIB * frac - 8.2e9 * 2) // kv_per_token)
    assert p.kv_pool_tokens == expected


def test_decode_is_bandwidth_bound_and_faster_on_h200() -> None:
    h100 = get_preset("h100-qwen3-8b").cost_model()
    h200 = get_preset("h200-qwen3-8b").cost_model()
    t1 = h100.decode_time_s(1, 1000)
    bytes_read = 8.2e9 * 2 + 1001 * QWEN3_8B.kv_bytes_per_token()
    expected = bytes_read / (3.35e12 * h100.bandwidth_efficiency)
    assert t1 == pytest.approx(expected + h100.overhead_s)
    assert h200.decode_time_s(1, 1000) < t1
    assert h100.decode_time_s(8, 80_000) > h100.decode_time_s(8, 8_000)   # KV reads count


def test_prefill_is_compute_bound_and_attention_grows_with_prefix() -> None:
    m = get_preset("h100-qwen3-8b").cost_model()
    t = m.prefill_time_s([PrefillChunk(0, 8192)])
    flops = 2 * 8.2e9 * 8192 + QWEN3_8B.attention_flops_per_token_per_ctx() * 8192 * 4096
    assert t == pytest.approx(flops / (989.5e12 * m.compute_efficiency) + m.overhead_s)
    assert m.prefill_time_s([PrefillChunk(90_000, 8192)]) > 1.5 * t
    assert m.prefill_time_s([]) == 0.0


def test_moe_reads_active_experts_at_batch_one_and_all_at_large_batch() -> None:
    m = QWEN3_235B_A22B
    one = m.decode_weight_params_read(1)
    dense = m.total_params - m.expert_params
    assert one == pytest.approx(dense + m.expert_params * 8 / 128)
    assert m.decode_weight_params_read(4096) == pytest.approx(m.total_params, rel=1e-3)


def test_fp8_models_use_fp8_peak() -> None:
    glm = get_preset("h100-glm-4.6-tp8")
    assert glm.model.uses_fp8
    m = glm.cost_model()
    flops = 2 * 32e9 * 8192 + glm.model.attention_flops_per_token_per_ctx() * 8192 * 4096
    compute = flops / (1979e12 * 8 * m.compute_efficiency)
    assert m.prefill_time_s([PrefillChunk(0, 8192)]) >= compute + m.overhead_s - 1e-12


def test_from_preset_overrides_and_errors() -> None:
    cfg = EngineConfig.from_preset("h100-qwen3-8b", kv_pool_tokens=64 * 100)
    # SGLang: clamp(C / context_len * 512, 2048, 4096), at most C // 2
    assert cfg.kv_pool_tokens == 6400 and cfg.max_running_requests == 2048
    assert cfg.preset == "h100-qwen3-8b"
    with pytest.raises(ValueError, match="unknown preset"):
        EngineConfig.from_preset("h100-nope")
    with pytest.raises(ValueError, match="override"):
        EngineConfig.from_preset("h100-qwen3-8b", no_such_knob=1)
    with pytest.raises(ValueError):
        RooflineCostModel(H100_SXM, QWEN3_8B, tp=1, compute_efficiency=1.5)
