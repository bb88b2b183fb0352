"""Scheduler-wide settings of the pure core (policy-specific knobs live beside each policy).

Every constant has its source:

* ``lease_s = 1800``: the required default of 30 minutes; ThunderAgent and Dynamo force
  resume / release after 1,800 s as well.
* ``max_paused_s = 300``: the required bound ("no program waits paused longer than a
  configurable bound, default 5 minutes").
* ``tick_s = 1.0``: the backstop period. Decisions run on every event; the tick only covers
  time passing (decay, leases, aging, predicted tool ends). ThunderAgent's monitor runs every
  5 s and the paper reports throughput insensitive to ticks of 2-10 s; a 1 s backstop keeps
  decay-driven restores prompt while costing one cheap call per second.
* ``prewarm_lead_s = 2.0``: restore/prewarm this long before a tool's predicted end. A
  one-token prefill of a 32k-token context on an H100 takes on the order of a second for an
  8B model; 2 s leaves the prefill done before the program's next request.
* ``tool_ewma_alpha = 0.2``: weight of the newest tool duration in the per-tool running mean
  (``tool_time.py``); 0.2 keeps about the last 5-10 calls in view (effective window
  (2 - alpha) / alpha = 9 samples), the usual smoothing for noisy service times.
* ``keep_terminated = 1000``: ended programs kept for ``GET /v1/programs`` and metrics.
* ``rollout_drain_fraction = 0.5``: the issue's straggler rule ("once more than half of its
  programs have ended"); ``rollout_priority_boost = 100``: a tenth of the paused-priority
  offset, so a straggler outranks its batch's peers but never an active program over a paused
  one's offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol


class ConfigError(ValueError):
    """A setting is out of range or unknown; the message names the field.

    ``knob`` is the name of the offending knob as it was passed to ``make_scheduler``
    (``"policy"`` for an unknown policy; None when the error names no single knob), so a
    caller can say it in its own terms (the service: its setting's flag and variable).
    """

    def __init__(self, message: str, *, knob: str | None = None) -> None:
        super().__init__(message)
        self.knob = knob


class UnknownKnob(ConfigError):
    """``make_scheduler`` was given a knob that neither the policy nor the scheduler has."""


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"{type(obj).__name__}.{name} must be a positive number, got {value!r}"
            )


class HasWatermarks(Protocol):
    """A policy config with the overflow watermarks (thunder, infercept, kvflow)."""

    @property
    def high_watermark(self) -> float: ...

    @property
    def low_watermark(self) -> float: ...


def check_watermarks(config: HasWatermarks) -> None:
    """A policy config's ``high_watermark`` and ``low_watermark``: each in (0, 1], low <= high."""
    owner = type(config).__name__
    for name in ("high_watermark", "low_watermark"):
        value = getattr(config, name)
        if not isinstance(value, int | float) or not 0 < value <= 1:
            raise ConfigError(f"{owner}.{name} must be in (0, 1], got {value!r}")
    low, high = config.low_watermark, config.high_watermark
    if low > high:
        raise ConfigError(f"{owner}.low_watermark ({low}) must not exceed high_watermark ({high})")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    lease_s: float = 1800.0
    """End a program after this long without an event (no request in flight or held)."""
    max_paused_s: float = 300.0
    """Aging bound: a paused program is forced back after this long (room is made for it)."""
    tick_s: float = 1.0
    """Backstop period ``next_deadline`` reports while time passing can change a decision."""
    prewarm_lead_s: float = 2.0
    """Restore and prewarm a paused acting program this long before its tool's predicted end."""
    tool_ewma_alpha: float = 0.2
    """Smoothing of the per-tool duration estimate (weight of the newest sample)."""
    keep_terminated: int = 1000
    """How many ended programs the snapshot keeps (oldest dropped first)."""
    rollout_drain_fraction: float = 0.5
    """A rollout batch is draining once more than this fraction of it ended: its live
    programs are stragglers (first to restore, last to pause) under rollout-aware policies."""
    rollout_priority_boost: int = 100
    """Added to a straggler's engine priority while it is active."""

    def __post_init__(self) -> None:
        _check_positive(self, "lease_s", "max_paused_s", "tick_s", "tool_ewma_alpha")
        if not isinstance(self.prewarm_lead_s, int | float) or self.prewarm_lead_s < 0:
            raise ConfigError(
                f"SchedulerConfig.prewarm_lead_s must be >= 0, got {self.prewarm_lead_s!r}"
            )
        if self.tool_ewma_alpha > 1:
            raise ConfigError(
                f"SchedulerConfig.tool_ewma_alpha must be in (0, 1], got {self.tool_ewma_alpha!r}"
            )
        drain = self.rollout_drain_fraction
        if not isinstance(drain, int | float) or not 0 <= drain < 1:
            raise ConfigError(
                f"SchedulerConfig.rollout_drain_fraction must be in [0, 1), got {drain!r}"
            )
        if not isinstance(self.rollout_priority_boost, int) or self.rollout_priority_boost < 0:
            raise ConfigError(
                f"SchedulerConfig.rollout_priority_boost must be an int >= 0, "
                f"got {self.rollout_priority_boost!r}"
            )
        if not isinstance(self.keep_terminated, int) or self.keep_terminated < 0:
            raise ConfigError(
                f"SchedulerConfig.keep_terminated must be an int >= 0, got {self.keep_terminated!r}"
            )

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))


__all__ = ["ConfigError", "SchedulerConfig", "UnknownKnob", "check_watermarks"]
