"""``kvflow``: KVFlow's workflow-aware KV management (Pan et al., NeurIPS'25, arXiv
2507.07400), ported from agent workflows on one SGLang engine to programs on a fleet, as a
comparison policy.

Written from the paper (sec. 3: the Agent Step Graph, steps-to-execution eviction, overlapped
KV prefetch from host) and its public code, PanZaifeng/KVFlow at 7ef897e (read with the
search tool, not copied), built on SGLang's hierarchical radix cache (HiCache):

* **eviction by steps-to-execution**: every agent gets a steps-to-execution value from the
  workflow (``AgentManager.update_agent_timestep``, ``managers/agent_manager.py`` L21-29); a
  cache node's hold priority is the smallest value of the agents sharing it, capped at
  ``hold_step + 1`` (L31-43, ``evict_pri_level`` 4 by default, ``server_args.py`` L388);
  ``HiRadixCache.evict`` (``mem_cache/hiradix_cache.py`` L268-276) evicts level by level,
  farthest from execution first, then regardless of holding. Programs have no workflow
  graph here; the nearest measure of "steps until it runs" is the predicted time until its
  next request (its tool's predicted end), so under memory pressure the core pauses acting
  programs latest predicted return first, and running (reasoning) programs only after them,
  newest first (a running request's nodes are locked, ``lock_ref``, in SGLang).
* **prefetch from host before it runs**: agents within ``load_ahead_step`` (2, L387) steps
  of execution are loaded back from host ahead of their request (``load_back`` with a
  priority; the scheduler's ``REQ_IS_EVICTED`` path, ``managers/scheduler.py`` L1866-1871,
  loads the rest on demand). Here an acting program on a backend with a host tier weighs
  nothing on the device while it acts and is loaded back by a ``Prewarm`` the scheduler's
  prewarm lead (or its transfer time, if longer) before its predicted tool end
  (``kv_tiers.load_lead_s``); with no prediction it is loaded on demand.
* **no admission policy of its own**: requests go to the engine as SGLang admits them;
  here a program is admitted while it fits its engine's whole pool (``high_watermark`` 1.0,
  ``low_watermark`` 0.95), restored in arrival order (FCFS), and stays on its engine while
  it fits there, else the emptiest engine where it fits (KVFlow runs one engine).

Without a host tier KVFlow's eviction order is all that is left: acting programs weigh their
full context (their nodes stay cached until evicted in that order). Deviations: the
scheduler's aging bound (``max_paused_s``) still applies, and pausing a program stands for
evicting its KV (the core has no per-node eviction command). Defect kept: within one hold
level the code takes leaves in collection order (``leaves.pop()``, the heap commented out,
L278-287), not LRU; here ties fall to the newest program.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.config import ConfigError, check_watermarks
from thunder_scheduling.kv_tiers import KvTier, TierRates, load_lead_s
from thunder_scheduling.policy import (
    ActingWeight,
    BasePolicy,
    PolicyView,
    is_reasoning,
    stay_else_least_committed,
)
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class KVFlowConfig:
    high_watermark: float = 1.0
    low_watermark: float = 0.95
    unknown_tool_s: float = 30.0
    """Predicted time away of a tool with no estimate (its eviction rank)."""
    load_tokens_per_s: float = 400_000.0
    """Load-back rate when the backend reports none (the prefetch lead)."""

    def __post_init__(self) -> None:
        check_watermarks(self)
        if not isinstance(self.unknown_tool_s, int | float) or self.unknown_tool_s < 0:
            raise ConfigError(
                f"KVFlowConfig.unknown_tool_s must be >= 0, got {self.unknown_tool_s!r}"
            )
        TierRates(load_tokens_per_s=self.load_tokens_per_s)


class KVFlowPolicy(BasePolicy):
    name = "kvflow"
    pauses = True
    restore_needs_fit = True

    def __init__(self, config: KVFlowConfig | None = None) -> None:
        self.config = config or KVFlowConfig()
        self.high_watermark = self.config.high_watermark
        self.low_watermark = self.config.low_watermark
        self.rates = TierRates(load_tokens_per_s=self.config.load_tokens_per_s)

    def place(self, program: Program, view: PolicyView) -> str | None:
        return stay_else_least_committed(program, view, self.low_watermark)

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (program.started_at, program.seq)

    def _return_at(self, program: Program) -> float:
        end = program.expected_tool_end_at()
        if end is None:
            end = (program.acting_since or program.last_event_at) + self.config.unknown_tool_s
        return end

    def pause_key(self, program: Program) -> tuple[float, ...] | None:
        if is_reasoning(program):
            return (1, -program.seq)
        return (0, -self._return_at(program), -program.seq)

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        if not view.tiers.host_room(program.backend, program.context_tokens):
            return ActingWeight(WeightMode.FULL)
        end = program.expected_tool_end_at()
        switch_at = None if end is None else end - load_lead_s(program, view, self.rates)
        return ActingWeight(
            WeightMode.NONE, switch_at=switch_at, then=WeightMode.FULL, prewarm_at_switch=True,
            tier=KvTier.HOST,
        )


__all__ = ["KVFlowConfig", "KVFlowPolicy"]
