"""Roofline cost model of one model on one tensor-parallel GPU group.

Algorithm (per iteration, per GPU; TP splits weights, FLOPs and KV heads evenly):

- Prefill of chunks (p_i prefix, e_i extend tokens):
  FLOPs = 2 * active_params * sum(e_i) + attn * sum(e_i * (p_i + e_i / 2)), where
  attn = 4 * layers * heads * head_dim (QK^T and PV, causal half over the new tokens).
  Bytes = weight bytes (all parameters are streamed once) + KV bytes of the prefixes read.
  time = max(FLOPs / (peak * compute_efficiency), bytes / (bw * bandwidth_efficiency)).
- Decode of b requests with total context S:
  FLOPs = 2 * active_params * b + attn * S.
  Bytes = weight bytes read (MoE: experts touched by the batch, see ``models``) + KV bytes of
  S context tokens (+ writing b new ones, negligible).
  time = max(compute time, memory time) as above.
- Every iteration adds ``overhead_s`` (scheduler, kernel launches, TP all-reduce latency; with
  CUDA graphs SGLang's decode overhead is a few hundred microseconds to a millisecond).

Peak FLOPs are bf16 for bf16 checkpoints and FP8 for FP8 checkpoints (W8A8 block FP8 GEMMs).
Prefill and decode never mix in one iteration (SGLang default, no ``--enable-mixed-chunk``).

Efficiency factors (what fraction of the datasheet peak a whole serving iteration reaches,
including TP all-reduces, sampling and scheduler work) and the per-iteration overhead were
fitted by hand to SGLang's published H100 figures for Llama-3.1-70B-Instruct on 4 x H100
(SGLang v0.3.0 vs vLLM v0.6.0 benchmark, ``benchmark/benchmark_vllm_060/README.md`` in
sgl-project/sglang): offline output throughput 3856 tok/s and median TPOT 25.03 ms / 33.07 ms
at 4 / 8 requests per second. ``tests/test_sim_costmodel_calibration.py`` replays those settings
through the engine and holds the model within 25% of each. Those runs predate SGLang's overlap
scheduler, so the 3 ms overhead is conservative for current versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from thunder_sim.costmodel.base import PrefillChunk
from thunder_sim.costmodel.hardware import GpuSpec
from thunder_sim.costmodel.models import ModelSpec

# Fitted to the calibration figures (see module doc and the calibration test).
DEFAULT_COMPUTE_EFFICIENCY = 0.33
DEFAULT_BANDWIDTH_EFFICIENCY = 0.55
DEFAULT_OVERHEAD_S = 3e-3


@dataclass(frozen=True, slots=True)
class RooflineCostModel:
    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    compute_efficiency: float = DEFAULT_COMPUTE_EFFICIENCY
    bandwidth_efficiency: float = DEFAULT_BANDWIDTH_EFFICIENCY
    overhead_s: float = DEFAULT_OVERHEAD_S
    # derived constants, computed once (decode_time_s runs once per modelled iteration)
    _flops_per_s: float = field(init=False, repr=False, compare=False)
    _bytes_per_s: float = field(init=False, repr=False, compare=False)
    _kv_bytes_per_token_all_ranks: int = field(init=False, repr=False, compare=False)
    _attn_flops: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError("tp must be >= 1")
        for name in ("compute_efficiency", "bandwidth_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.overhead_s < 0:
            raise ValueError("overhead_s must be >= 0")
        peak = self.gpu.fp8_dense_flops if self.model.uses_fp8 else self.gpu.bf16_dense_flops
        object.__setattr__(self, "_flops_per_s", peak * self.compute_efficiency * self.tp)
        object.__setattr__(self, "_bytes_per_s",
                           self.gpu.hbm_bytes_per_s * self.bandwidth_efficiency * self.tp)
        object.__setattr__(self, "_kv_bytes_per_token_all_ranks",
                           self.model.kv_bytes_per_token(self.tp) * self.tp)
        object.__setattr__(self, "_attn_flops", self.model.attention_flops_per_token_per_ctx())

    def prefill_time_s(self, chunks: Sequence[PrefillChunk]) -> float:
        m = self.model
        extend = 0
        attn_pairs = 0.0
        prefix = 0
        for c in chunks:
            extend += c.extend_tokens
            prefix += c.prefix_tokens
            attn_pairs += c.extend_tokens * (c.prefix_tokens + c.extend_tokens / 2)
        if extend <= 0:
            return 0.0
        flops = 2.0 * m.active_params * extend + self._attn_flops * attn_pairs
        bytes_read = (m.decode_weight_params_read(extend) * m.weight_bytes_per_param
                      + prefix * self._kv_bytes_per_token_all_ranks)
        return max(flops / self._flops_per_s, bytes_read / self._bytes_per_s) + self.overhead_s

    def decode_time_s(self, batch_size: int, context_tokens: int) -> float:
        if batch_size <= 0:
            return 0.0
        m = self.model
        flops = 2.0 * m.active_params * batch_size + self._attn_flops * context_tokens
        bytes_read = (m.decode_weight_params_read(batch_size) * m.weight_bytes_per_param
                      + (context_tokens + batch_size) * self._kv_bytes_per_token_all_ranks)
        return max(flops / self._flops_per_s, bytes_read / self._bytes_per_s) + self.overhead_s
