"""``thunder``: ThunderAgent's program-level pause and restore (arXiv 2602.13692, sec. 4.3),
with the defects of its public code fixed. The rules, their defaults and the measurements that
chose them are in docs/scheduling.md ("The thunder policy"). What it ports and how it differs:

* overflow per backend with hysteresis (high / low watermark); marks are never repeated
  (ThunderAgent re-marked every reasoning program once no acting one was left);
* ``pause_key``: acting before reasoning, smallest context first (S_pause = 1/c + I(acting));
* acting weight ``c * 2 ** (-t / acting_half_life_s)`` used for admission, restore and pause
  alike (ThunderAgent decayed only on resume), back to full ``prewarm_lead_s`` before a
  predicted tool end;
* ``restore_key``: reasoning first, then smallest context (S_restore = 1/c + I(reasoning)),
  with old waiters promoted first (ThunderAgent restored largest first);
* ``place``: the previous backend when the program fits there, else best fit (ThunderAgent:
  the emptiest replica, ignoring locality); a program larger than the low watermark runs alone;
  while anyone waits a new program joins the queue instead of jumping it (as ThunderAgent's);
* engine priority lowered by ``paused_priority_offset`` while marked or paused;
* ``rollout_aware``: RL rollout batches get group-aware placement and stragglers first
  (``rollouts.py``; ThunderAgent has no notion of a batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thunder_core.contract import ProgramStatus
from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.config import ConfigError, check_watermarks
from thunder_scheduling.kv_tiers import KvTier, TierRates, offload_weight
from thunder_scheduling.policy import (
    ActingWeight,
    BasePolicy,
    PolicyView,
    best_fit,
    fits,
    free_room,
    is_reasoning,
)
from thunder_scheduling.program_table import Program

TIER_RATES = TierRates()


@dataclass(frozen=True, slots=True)
class ThunderConfig:
    high_watermark: float = 0.98
    low_watermark: float = 0.90
    acting_half_life_s: float = 30.0
    promote_after_s: float | None = 150.0
    """Half the default aging bound: a long waiter gets the next room before it is forced."""
    restore_scan_limit: int = 8
    """Queue entries that may fail to place before a restore pass stops (bounds its cost)."""
    paused_priority_offset: int = 1000
    """Engine priority of marked/paused programs: own priority minus this (contract range)."""
    pause_order: str = "smallest"
    """``smallest``: acting first, smallest context first; ``away_longest``: acting first,
    latest predicted tool end first (unknown: ``unknown_tool_s`` after it left the LLM)."""
    unknown_tool_s: float = 30.0
    max_paused_share: float | None = None
    """Aging by share of life: a waiting program is forced back when the time it spent
    paused reaches this share of its life so far (never before ``share_grace_s`` into the
    wait). ``None``: the scheduler's single-pause bound (``max_paused_s``)."""
    share_grace_s: float = 30.0
    arrivals_join_queue: bool = True
    """While any program waits, a new program joins the queue and is placed in restore order
    (promoted waiters first) rather than taking room on arrival (False: placed at once where
    it fits, the rule before)."""

    def __post_init__(self) -> None:
        if self.pause_order not in ("smallest", "away_longest"):
            raise ConfigError(
                f"ThunderConfig.pause_order must be smallest or away_longest, "
                f"got {self.pause_order!r}"
            )
        share = self.max_paused_share
        if share is not None and (not isinstance(share, int | float) or not 0 < share < 1):
            raise ConfigError(
                f"ThunderConfig.max_paused_share must be in (0, 1) or None, got {share!r}"
            )
        if not isinstance(self.share_grace_s, int | float) or self.share_grace_s < 0:
            raise ConfigError(
                f"ThunderConfig.share_grace_s must be >= 0, got {self.share_grace_s!r}"
            )
        check_watermarks(self)
        half_life = self.acting_half_life_s
        if not isinstance(half_life, int | float) or not math.isfinite(half_life) or half_life <= 0:
            raise ConfigError(
                f"ThunderConfig.acting_half_life_s must be a positive number, got {half_life!r}"
            )
        promote = self.promote_after_s
        if promote is not None and (not isinstance(promote, int | float) or promote <= 0):
            raise ConfigError(
                f"ThunderConfig.promote_after_s must be positive or None, got {promote!r}"
            )
        if not isinstance(self.arrivals_join_queue, bool):
            raise ConfigError(
                f"ThunderConfig.arrivals_join_queue must be true or false, "
                f"got {self.arrivals_join_queue!r}"
            )
        if not isinstance(self.restore_scan_limit, int) or self.restore_scan_limit < 1:
            raise ConfigError(
                f"ThunderConfig.restore_scan_limit must be an int >= 1, "
                f"got {self.restore_scan_limit!r}"
            )
        if not isinstance(self.paused_priority_offset, int) or self.paused_priority_offset < 0:
            raise ConfigError(
                f"ThunderConfig.paused_priority_offset must be an int >= 0, "
                f"got {self.paused_priority_offset!r}"
            )


class ThunderPolicy(BasePolicy):
    name = "thunder"
    pauses = True
    restore_needs_fit = True
    rollout_aware = True

    def __init__(self, config: ThunderConfig | None = None) -> None:
        self.config = config or ThunderConfig()
        self.high_watermark = self.config.high_watermark
        self.low_watermark = self.config.low_watermark
        self.acting_half_life_s = self.config.acting_half_life_s
        self.promote_after_s = self.config.promote_after_s
        self.restore_scan_limit = self.config.restore_scan_limit
        self.arrivals_join_queue = self.config.arrivals_join_queue

    def place(self, program: Program, view: PolicyView) -> str | None:
        low = self.low_watermark
        previous = view.backends().get(program.backend) if program.backend else None
        usable = previous is not None and previous.healthy and previous.capacity_tokens > 0
        if view.forced:
            if usable and previous is not None:
                return previous.name
            ranked = sorted(view.healthy(), key=lambda b: -free_room(b, view.now, low))
            return ranked[0].name if ranked else None
        if usable and previous is not None and fits(program, previous, view, low):
            return previous.name
        if usable and program.kv_tier is not KvTier.GONE:
            return None  # its KV is kept there (a host tier): wait for room rather than move
        if program.backend is not None:
            chosen = best_fit(program, view, low)
            return None if chosen is None else chosen.name
        best = None
        best_room = 0.0
        for ledger in view.healthy():
            if not fits(program, ledger, view, low):
                continue
            room = free_room(ledger, view.now, low)
            if best is None or room > best_room:
                best, best_room = ledger, room
        return None if best is None else best.name

    def aging_deadline(
        self, started_at: float, paused_since: float, paused_before_s: float, max_paused_s: float
    ) -> float:
        share = self.config.max_paused_share
        if share is None:
            return paused_since + max_paused_s
        # paused_before + (t - paused_since) = share * (t - started_at), solved for t
        at_share = (paused_since - paused_before_s - share * started_at) / (1 - share)
        return max(paused_since + self.config.share_grace_s, at_share)

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (
            0 if program.kv_tier is KvTier.HOST else 1,  # a host tier: cheap to load back
            0 if is_reasoning(program) else 1,
            program.context_tokens,
            program.seq,
        )

    def pause_key(self, program: Program) -> tuple[float, ...] | None:
        if self.config.pause_order == "away_longest" and not is_reasoning(program):
            end = program.expected_tool_end_at()
            if end is None:
                end = (program.acting_since or 0.0) + self.config.unknown_tool_s
            return (0, -end, program.context_tokens, program.seq)
        return (1 if is_reasoning(program) else 0, program.context_tokens, program.seq)

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        offloaded = offload_weight(program, view, TIER_RATES, self.config.unknown_tool_s)
        if offloaded is not None:
            return offloaded  # a host tier: offloaded while it acts (kv_tiers.py)
        expected_end = program.expected_tool_end_at()
        if expected_end is None:
            return ActingWeight(WeightMode.DECAYING)
        return ActingWeight(
            WeightMode.DECAYING,
            switch_at=expected_end - view.prewarm_lead_s,
            then=WeightMode.FULL,
            prewarm_at_switch=True,
        )

    def engine_priority(self, program: Program, view: PolicyView) -> int | None:
        if program.marked or program.status is ProgramStatus.PAUSED:
            return program.priority - self.config.paused_priority_offset
        return program.priority


__all__ = ["ThunderConfig", "ThunderPolicy"]
