"""A scaled real-time clock: modelled seconds run ``time_scale`` times faster than wall seconds.

``now_s() = anchor_model_s + (wall() - anchor_wall_s) * time_scale``. Changing the scale
re-anchors at the current instant, so modelled time stays continuous (never jumps back or
forward) when ``--auto-time-scale`` lowers the scale. The wall source is injected so tests can
drive it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ScaledClock:
    def __init__(self, time_scale: float = 1.0, wall: Callable[[], float] = time.monotonic):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self._wall = wall
        self._scale = float(time_scale)
        self._anchor_wall_s = wall()
        self._anchor_model_s = 0.0

    @property
    def time_scale(self) -> float:
        return self._scale

    def wall_s(self) -> float:
        return self._wall()

    def now_s(self) -> float:
        """Current modelled time in seconds (0 at construction)."""
        return self._anchor_model_s + (self._wall() - self._anchor_wall_s) * self._scale

    def wall_at(self, model_s: float) -> float:
        """The wall instant at which modelled time reaches ``model_s``."""
        return self._anchor_wall_s + (model_s - self._anchor_model_s) / self._scale

    def to_wall_s(self, model_duration_s: float) -> float:
        return model_duration_s / self._scale

    def set_time_scale(self, time_scale: float) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        now_wall = self._wall()
        self._anchor_model_s += (now_wall - self._anchor_wall_s) * self._scale
        self._anchor_wall_s = now_wall
        self._scale = float(time_scale)
