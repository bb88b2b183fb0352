"""``continuum``: a Continuum-style policy (arXiv 2511.02230), for comparison.

What it ports: after a turn that ends in a tool call, the program's KV is *pinned* for a
TTL chosen from the tool's expected duration (per-tool moving average, ``tool_time.py``, or
the client's hint); the pin expires by itself. Programs are served first-come-first-served at
program level: the waiting queue is ordered by program arrival and strictly head-of-line, and
the engine priority of every request is its program's arrival rank (older first).

How it is expressed here: a pinned acting program weighs its full context in the accounting
(``WeightMode.FULL``) until ``tool start + min(expected duration, max_pin_s)``, then nothing
(``NONE``: its KV may be evicted by the engine). A response that ends in a tool call pins for
``pin_grace_s`` until the tool's start event names the tool; any other response end unpins at
once. Admission (new programs and held requests) waits while pinned plus running programs
fill the capacity. It never pauses a program: under pressure the engine evicts unpinned KV
and preempts by priority, as in Continuum's vLLM fork.

Differences from the paper: Continuum pins only when the expected reload cost beats the
queueing cost; we pin whenever a duration is known (capped by ``max_pin_s``), which is the
behaviour its evaluation shows at high load. Without an estimate for the tool (first calls)
it does not pin.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.config import ConfigError
from thunder_scheduling.policy import ActingWeight, BasePolicy, PolicyView, fits, free_room
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class ContinuumConfig:
    max_pin_s: float = 60.0
    """Longest pin (a heavy-tailed tool must not hold KV for minutes)."""
    pin_grace_s: float = 1.0
    """Pin after a response that ends in a tool call until the tool start names the tool."""
    watermark: float = 1.0
    """Admission limit as a fraction of capacity (Continuum admits up to the full pool)."""

    def __post_init__(self) -> None:
        for name in ("max_pin_s", "pin_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"ContinuumConfig.{name} must be >= 0, got {value!r}")
        if not isinstance(self.watermark, int | float) or not 0 < self.watermark <= 1:
            raise ConfigError(
                f"ContinuumConfig.watermark must be in (0, 1], got {self.watermark!r}"
            )


class ContinuumPolicy(BasePolicy):
    name = "continuum"
    pauses = False
    restore_scan_limit = 1
    restore_needs_fit = True

    def __init__(self, config: ContinuumConfig | None = None) -> None:
        self.config = config or ContinuumConfig()
        self.high_watermark = self.config.watermark
        self.low_watermark = self.config.watermark

    def place(self, program: Program, view: PolicyView) -> str | None:
        if not view.restoring and view.waiting_count > 0:
            return None  # FCFS: a new program queues behind the waiting ones
        if view.forced and program.backend is not None:
            previous = view.backends().get(program.backend)
            if previous is not None and previous.healthy:
                return previous.name
        best = None
        best_room = 0.0
        for ledger in view.healthy():
            if not (view.forced or fits(program, ledger, view, self.low_watermark)):
                continue
            room = free_room(ledger, view.now, self.low_watermark)
            if ledger.name == program.backend:
                room = float("inf")  # its KV may still be there
            if best is None or room > best_room:
                best, best_room = ledger, room
        return None if best is None else best.name

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (program.seq,)

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        since = program.acting_since if program.acting_since is not None else view.now
        if program.tools:
            call = next(reversed(program.tools.values()))
            if call.expected_end_at is None:
                return ActingWeight(WeightMode.NONE)
            ttl = min(self.config.max_pin_s, max(0.0, call.expected_end_at - call.started_at))
            return ActingWeight(
                WeightMode.FULL, switch_at=call.started_at + ttl, then=WeightMode.NONE
            )
        if program.ended_with_tool_call:
            return ActingWeight(
                WeightMode.FULL, switch_at=since + self.config.pin_grace_s, then=WeightMode.NONE
            )
        return ActingWeight(WeightMode.NONE)

    def engine_priority(self, program: Program, view: PolicyView) -> int | None:
        return -program.seq


__all__ = ["ContinuumConfig", "ContinuumPolicy"]
