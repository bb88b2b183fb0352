"""``infercept``: InferCept's min-waste interception (Abhyankar et al., ICML'24, arXiv
2402.01869), ported from one engine to programs on a fleet, as a comparison policy.

Written from the paper (sec. 4: waste of discard / preserve / swap, "min-waste interception",
FCFS across requests) and its public code, WukLab/InferCept at 3a1a4da
(``vllm/core/scheduler_v2.py``, the ``V`` policy; read with the search tool, not copied):

* **per interception, the least wasteful place for the KV** (``acting_weight``): keep it on
  the GPU (*preserve*: ``w_p = api_remaining_time * seq tokens``, scheduler_v2.py L637-638),
  swap it to host (*swap*: transfer time times the batch's memory), or drop it and recompute
  on return (*discard*: ``discard_waste``, L591-607, recompute time times the running batch's
  memory); the three formulas are ``kv_tiers.waste``. A preserved program weighs its full
  context on the device budget; a swapped or discarded one nothing. Swap only within the
  host budget (``passive_discard_by_order``, L274-300: with the CPU pool full, swapped
  sequences are discarded instead).
* **the remaining tool time is known**: InferCept takes ``api_exec_time`` from the request
  (``sampling_params.api_exec_time``); here it is the scheduler's per-tool estimate (or the
  client's ``expected_duration_s``). With no estimate at all it preserves, the ``V``
  policy's default at interception (``pause_seq_group``, L148-149).
* **no prefetch**: a swapped sequence is swapped in when its call returns
  (``resume_seq_group`` puts it on the swapped queue, L179-200), not ahead of need; so the
  weight of a swapped or discarded program switches back only when its next request comes.
* **FCFS otherwise**: waiting programs are restored in their original arrival order
  (``policy.sort_by_priority`` with ``fcfs``; the paper's "original arrival time
  scheduling"), strictly head of line (``restore_scan_limit`` 1); under memory pressure the
  intercepted programs go first, longest remaining call first (``passive_discard_by_order``
  sorts victims by ``api_remaining_time``, L285, and takes the last), then running ones,
  latest arrival first (vLLM's ``self.running.pop(-1)`` preemption).
* admission up to the whole pool less vLLM's 1% block watermark (``high_watermark`` 1.0,
  ``low_watermark`` 0.99); a program stays on its engine while it fits there, else the
  emptiest engine where it fits (InferCept is single-engine; this is the least-loaded
  router in front of several).

Deviations (the service's guarantees, kept for every policy): the scheduler's aging bound
(``max_paused_s``) still forces a long waiter back, and a paused program's place is tracked
by the core (``kv_tiers.py``) like any other. Defects kept: waste is computed once per
interception with the estimate of that moment (the ``V`` policy re-evaluates preserved
sequences every iteration, L631-651, but never moves a swapped one back early), and the
batch memory in the swap and discard waste is the backend's whole committed use.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.config import check_watermarks
from thunder_scheduling.kv_tiers import KvTier, TierRates, choose_tier
from thunder_scheduling.policy import (
    ActingWeight,
    BasePolicy,
    PolicyView,
    is_reasoning,
    stay_else_least_committed,
)
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class InferCeptConfig:
    high_watermark: float = 1.0
    low_watermark: float = 0.99
    prefill_tokens_per_s: float = 8_000.0
    """Recompute rate in the discard waste (its profiled ``batch_polynomial``, here the
    simulated H100 / Qwen3-8B's 7.8-11k tokens/s)."""
    load_tokens_per_s: float = 400_000.0
    """Swap rate when the backend reports none (its profiled ``per_token_swap_latency``)."""

    def __post_init__(self) -> None:
        check_watermarks(self)
        TierRates(self.prefill_tokens_per_s, self.load_tokens_per_s)


class InferCeptPolicy(BasePolicy):
    name = "infercept"
    pauses = True
    restore_scan_limit = 1
    restore_needs_fit = True

    def __init__(self, config: InferCeptConfig | None = None) -> None:
        self.config = config or InferCeptConfig()
        self.high_watermark = self.config.high_watermark
        self.low_watermark = self.config.low_watermark
        self.rates = TierRates(self.config.prefill_tokens_per_s, self.config.load_tokens_per_s)

    def place(self, program: Program, view: PolicyView) -> str | None:
        return stay_else_least_committed(program, view, self.low_watermark)

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (program.started_at, program.seq)

    def pause_key(self, program: Program) -> tuple[float, ...] | None:
        if is_reasoning(program):
            return (1, -program.started_at, -program.seq)
        end = program.expected_tool_end_at()
        return (0, 0.0 if end is None else -end, -program.seq)

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        end = program.expected_tool_end_at()
        if end is None:
            return ActingWeight(WeightMode.FULL)  # unknown call time: preserve
        backend = program.backend
        ledger = view.backends().get(backend) if backend is not None else None
        batch = ledger.committed_tokens(view.now) if ledger is not None else 0.0
        tier = choose_tier(
            program.context_tokens, end - view.now, batch, self.rates,
            view.tiers.host_room(backend, program.context_tokens),
            view.tiers.load_tokens_per_s(backend),
        )
        if tier is KvTier.DEVICE:
            return ActingWeight(WeightMode.FULL)
        return ActingWeight(WeightMode.NONE, tier=tier)


__all__ = ["InferCeptConfig", "InferCeptPolicy"]
