"""Named (GPU, model, TP) presets and the KV pool size SGLang would allocate for them.

KV pool size C (tokens), as SGLang sizes it (``ModelRunner`` profile of free memory):
    C = (gpu_memory * mem_fraction_static - weight_bytes / tp) / kv_bytes_per_token_per_gpu
The CUDA context and NCCL buffers (a few hundred MiB) are ignored.

``mem_fraction_static`` is SGLang 0.5.23's default (``sglang/srt/arg_groups/memory_hook.py``,
``_handle_gpu_memory_settings``): ``round((gpu_mem - reserved_mem) / gpu_mem, 3)`` with, in MiB,
    reserved_mem = 512 + max(chunked_prefill_size, 2048) * 1.5 + tp / 8 * 1024
                   + decode_cuda_graph_max_bs * 2,
floored at 10 * 1024 on GPUs above 60 GiB, where chunked_prefill_size is 8192 and the decode
CUDA-graph max batch size is 256 (tp < 4) or 512 (tp >= 4) for H100/H200-class memory.

Default max running requests, also SGLang's (``pool_configurator.py``,
``_resolve_max_running_requests_per_worker``): ``clamp(int(C / context_len * 512), 2048, 4096)``
capped at ``C // 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_sim.costmodel.hardware import GPUS, MIB, GpuSpec
from thunder_sim.costmodel.models import (
    GLM_46,
    LLAMA_31_70B,
    QWEN3_8B,
    QWEN3_32B,
    QWEN3_235B_A22B,
    ModelSpec,
)
from thunder_sim.costmodel.roofline import RooflineCostModel

SGLANG_CHUNKED_PREFILL_SIZE_H100 = 8192   # memory_hook.py: 60 GiB <= gpu_mem < 160 GiB


def sglang_mem_fraction_static(
    gpu: GpuSpec, tp: int, chunked_prefill_size: int = SGLANG_CHUNKED_PREFILL_SIZE_H100
) -> float:
    gpu_mem_mib = gpu.usable_memory_bytes / MIB
    decode_max_bs = 256 if tp < 4 else 512
    reserved_mib = 512 + max(chunked_prefill_size, 2048) * 1.5 + tp / 8 * 1024 + decode_max_bs * 2
    if gpu_mem_mib > 60 * 1024:
        reserved_mib = max(reserved_mib, 10 * 1024)
    return round((gpu_mem_mib - reserved_mib) / gpu_mem_mib, 3)


def kv_pool_tokens(gpu: GpuSpec, model: ModelSpec, tp: int, mem_fraction_static: float) -> int:
    free_bytes = gpu.usable_memory_bytes * mem_fraction_static - model.weight_bytes / tp
    if free_bytes <= 0:
        raise ValueError(f"{model.name} weights do not fit {tp} x {gpu.name}")
    return int(free_bytes // model.kv_bytes_per_token(tp))


def sglang_max_running_requests(pool_tokens: int, context_len: int) -> int:
    estimated = max(min(int(pool_tokens / context_len * 512), 4096), 2048)
    return max(1, min(estimated, pool_tokens // 2))


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    gpu: GpuSpec
    model: ModelSpec
    tp: int

    @property
    def mem_fraction_static(self) -> float:
        return sglang_mem_fraction_static(self.gpu, self.tp)

    @property
    def kv_pool_tokens(self) -> int:
        return kv_pool_tokens(self.gpu, self.model, self.tp, self.mem_fraction_static)

    @property
    def max_running_requests(self) -> int:
        return sglang_max_running_requests(self.kv_pool_tokens, self.model.context_len)

    def cost_model(self) -> RooflineCostModel:
        return RooflineCostModel(gpu=self.gpu, model=self.model, tp=self.tp)


def _preset(gpu: str, model: ModelSpec, tp: int) -> Preset:
    suffix = f"-tp{tp}" if tp > 1 else ""
    return Preset(name=f"{gpu}-{model.name}{suffix}", gpu=GPUS[gpu], model=model, tp=tp)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset("h100", QWEN3_8B, 1),
        _preset("h200", QWEN3_8B, 1),
        _preset("h100", QWEN3_32B, 1),
        _preset("h200", QWEN3_32B, 1),
        _preset("h100", LLAMA_31_70B, 4),
        _preset("h200", LLAMA_31_70B, 4),
        _preset("h100", QWEN3_235B_A22B, 8),
        _preset("h200", QWEN3_235B_A22B, 8),
        _preset("h100", GLM_46, 8),
        _preset("h200", GLM_46, 8),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
