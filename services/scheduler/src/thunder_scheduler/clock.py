"""The service's clock: modelled seconds = ``time.monotonic()`` x ``time_scale``.

The scheduling core never reads a clock; the driver stamps every event with ``Clock.now()`` and
calls ``tick(now)``. ``time_scale`` is the same knob as the simulator's: with ``time_scale`` 10,
one wall second is ten modelled seconds, so the core's ticks, tool-time decay, leases and aging
bound (all stated in modelled seconds) stay true to the modelled time. The live default is 1.

``ManualClock`` is the test double: time moves only when a test advances it.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    """Modelled time in seconds (any epoch, never decreasing) and its ratio to wall time."""

    @property
    def time_scale(self) -> float:
        """Modelled seconds per wall second."""
        ...

    def now(self) -> float:
        """Modelled seconds now."""
        ...

    def wall_seconds(self, modelled_s: float) -> float:
        """How many wall seconds ``modelled_s`` modelled seconds take (for sleeping)."""
        ...


class MonotonicClock:
    """``time.monotonic()`` times ``time_scale``."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self._time_scale = time_scale

    @property
    def time_scale(self) -> float:
        return self._time_scale

    def now(self) -> float:
        return time.monotonic() * self._time_scale

    def wall_seconds(self, modelled_s: float) -> float:
        return max(0.0, modelled_s) / self._time_scale


class ManualClock:
    """A clock for tests: ``advance(s)`` moves it; sleeping is instant in wall time."""

    def __init__(self, start: float = 0.0, time_scale: float = 1.0) -> None:
        self._now = start
        self._time_scale = time_scale

    @property
    def time_scale(self) -> float:
        return self._time_scale

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes back")
        self._now += seconds

    def wall_seconds(self, modelled_s: float) -> float:
        return max(0.0, modelled_s) / self._time_scale
