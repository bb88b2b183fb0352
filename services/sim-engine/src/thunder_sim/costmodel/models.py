"""Model specifications for the roofline cost model.

Every architecture constant is the value in the model's Hugging Face ``config.json`` (named
per field below); parameter counts are from the model cards. KV cache is bf16 (SGLang's
default ``--kv-cache-dtype auto`` follows the model dtype; FP8 checkpoints keep a bf16 KV cache).

MoE approximation: FLOPs per token use the *active* parameters (the model card's figure).
Weight bytes read by one decode iteration are the dense part (attention, embeddings, shared
experts, dense layers: ``total - expert_params``) plus the fraction of routed-expert weights
that the batch touches. With ``b`` tokens each routed to ``k`` of ``E`` experts uniformly and
independently, an expert is touched with probability ``1 - (1 - k/E)**b``; so a batch of one
reads ``active`` parameters and a large batch reads all of them. Real routing is skewed, which
this slightly over-estimates (more distinct experts than real traffic touches).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    total_params: float           # all parameters (memory)
    active_params: float          # parameters used per token (FLOPs); == total for dense
    num_layers: int               # config.json num_hidden_layers
    hidden_size: int              # config.json hidden_size
    num_attention_heads: int      # config.json num_attention_heads
    num_kv_heads: int             # config.json num_key_value_heads
    head_dim: int                 # config.json head_dim (or hidden_size / heads)
    weight_bytes_per_param: float  # 2 = bf16, 1 = fp8 (block-quantised checkpoints)
    context_len: int              # config.json max_position_embeddings
    num_experts: int = 0          # routed experts (0 = dense)
    experts_per_token: int = 0    # config.json num_experts_per_tok
    expert_params: float = 0.0    # parameters in routed experts, all layers
    kv_bytes_per_elem: int = 2    # bf16 KV cache

    def __post_init__(self) -> None:
        if self.active_params > self.total_params or self.active_params <= 0:
            raise ValueError(f"{self.name}: need 0 < active_params <= total_params")
        if self.num_experts and not (0 < self.experts_per_token <= self.num_experts):
            raise ValueError(f"{self.name}: experts_per_token must be in 1..num_experts")
        if self.expert_params > self.total_params:
            raise ValueError(f"{self.name}: expert_params exceeds total_params")

    @property
    def weight_bytes(self) -> float:
        return self.total_params * self.weight_bytes_per_param

    @property
    def uses_fp8(self) -> bool:
        return self.weight_bytes_per_param < 2

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV bytes one token occupies on one GPU: K and V for every layer.

        KV heads are split across TP ranks; with fewer KV heads than ranks each rank keeps a
        replica of one head (SGLang replicates KV heads when ``tp > num_kv_heads``).
        """
        heads_per_rank = max(self.num_kv_heads // tp, 1) if tp > 1 else self.num_kv_heads
        return 2 * self.num_layers * heads_per_rank * self.head_dim * self.kv_bytes_per_elem

    def decode_weight_params_read(self, batch_tokens: int) -> float:
        """Parameters one decode iteration of ``batch_tokens`` tokens reads (see module doc)."""
        if not self.num_experts or batch_tokens <= 0:
            return self.total_params
        dense = self.total_params - self.expert_params
        touched = 1.0 - (1.0 - self.experts_per_token / self.num_experts) ** batch_tokens
        return dense + self.expert_params * touched

    def attention_flops_per_token_per_ctx(self) -> float:
        """FLOPs of QK^T plus PV for one query token against one context token (all layers)."""
        return 4.0 * self.num_layers * self.num_attention_heads * self.head_dim


# Qwen/Qwen3-8B: model card "Number of Parameters: 8.2B"; config.json num_hidden_layers 36,
# hidden_size 4096, num_attention_heads 32, num_key_value_heads 8, head_dim 128,
# max_position_embeddings 40960, torch_dtype bfloat16.
QWEN3_8B = ModelSpec(
    name="qwen3-8b", total_params=8.2e9, active_params=8.2e9, num_layers=36, hidden_size=4096,
    num_attention_heads=32, num_kv_heads=8, head_dim=128, weight_bytes_per_param=2,
    context_len=40960,
)

# Qwen/Qwen3-32B: model card "Number of Parameters: 32.8B"; config.json num_hidden_layers 64,
# hidden_size 5120, num_attention_heads 64, num_key_value_heads 8, head_dim 128,
# max_position_embeddings 40960, torch_dtype bfloat16. (The model of SGLang's published
# HiCache multi-turn run, ``bench/sim_engine/bench_hicache_multiturn.py``.)
QWEN3_32B = ModelSpec(
    name="qwen3-32b", total_params=32.8e9, active_params=32.8e9, num_layers=64,
    hidden_size=5120, num_attention_heads=64, num_kv_heads=8, head_dim=128,
    weight_bytes_per_param=2, context_len=40960,
)

# meta-llama/Llama-3.1-70B-Instruct: model card "70B" (70.6e9 in the safetensors index);
# config.json num_hidden_layers 80, hidden_size 8192, num_attention_heads 64,
# num_key_value_heads 8, head_dim 8192/64 = 128, max_position_embeddings 131072, bf16.
LLAMA_31_70B = ModelSpec(
    name="llama-3.1-70b", total_params=70.6e9, active_params=70.6e9, num_layers=80,
    hidden_size=8192, num_attention_heads=64, num_kv_heads=8, head_dim=128,
    weight_bytes_per_param=2, context_len=131072,
)

# meta-llama/Llama-3.1-8B-Instruct (calibration only): model card 8.03e9 params;
# config.json num_hidden_layers 32, hidden_size 4096, heads 32, kv heads 8, head_dim 128.
LLAMA_31_8B = ModelSpec(
    name="llama-3.1-8b", total_params=8.03e9, active_params=8.03e9, num_layers=32,
    hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128,
    weight_bytes_per_param=2, context_len=131072,
)

# Qwen/Qwen3-235B-A22B: model card "235B in total and 22B activated", 128 experts, 8 activated;
# config.json num_hidden_layers 94, hidden_size 4096, num_attention_heads 64,
# num_key_value_heads 4, head_dim 128, moe_intermediate_size 1536, max_position_embeddings
# 40960, bf16 (fits 8xH100: 470 GB of 8x80 GB). Routed expert params:
# 94 layers x 128 experts x 3 matrices x 4096 x 1536 = 227e9.
QWEN3_235B_A22B = ModelSpec(
    name="qwen3-235b-a22b", total_params=235e9, active_params=22e9, num_layers=94,
    hidden_size=4096, num_attention_heads=64, num_kv_heads=4, head_dim=128,
    weight_bytes_per_param=2, context_len=40960, num_experts=128, experts_per_token=8,
    expert_params=94 * 128 * 3 * 4096 * 1536,
)

# zai-org/GLM-4.6: model card "355B total parameters, 32B active", context 200K;
# config.json num_hidden_layers 92, hidden_size 5120, num_attention_heads 96,
# num_key_value_heads 8, head_dim 128, n_routed_experts 160, num_experts_per_tok 8,
# moe_intermediate_size 1536, first_k_dense_replace 3, max_position_embeddings 202752.
# Served as zai-org/GLM-4.6-FP8 (1 byte/param): bf16 weights (710 GB) do not fit 8xH100
# (640 GB), and the FP8 checkpoint is what SGLang's GLM-4.6 instructions use on H100/H200.
# Routed expert params: 89 MoE layers x 160 experts x 3 x 5120 x 1536 = 336e9.
GLM_46 = ModelSpec(
    name="glm-4.6", total_params=355e9, active_params=32e9, num_layers=92, hidden_size=5120,
    num_attention_heads=96, num_kv_heads=8, head_dim=128, weight_bytes_per_param=1,
    context_len=202752, num_experts=160, experts_per_token=8,
    expert_params=89 * 160 * 3 * 5120 * 1536,
)

MODELS: dict[str, ModelSpec] = {
    m.name: m for m in (QWEN3_8B, QWEN3_32B, LLAMA_31_8B, LLAMA_31_70B, QWEN3_235B_A22B, GLM_46)
}
