"""Event-loop lag of the real-time shell: how late the engine loop wakes versus its plan.

``record(late_s, step_wall_s, lost_wall_s)`` is called once per engine step: ``late_s`` is how
late the loop woke against the planned end of the step (reported as lag; small lateness is
absorbed by the runner's timeline), ``step_wall_s`` the step's planned wall time, and
``lost_wall_s`` the wall time the runner skipped when it had to re-sync its timeline to the
clock while busy: idle time the modelled GPU would not have had. Over windows of
``window_wall_s`` wall seconds, a window is *distorted* when ``lost / planned >
max_lag_fraction`` (default 0.10: the modelled GPU sat idle more than 10% of its step time for
Python's sake). After
``sustain_windows`` distorted windows in a row the monitor warns in the log and, with
``auto_time_scale``, divides the time scale by ``(1 + fraction) / 0.9`` (aiming 10% under the
scale that would just keep up), never below ``min_time_scale``. The clock re-anchors so
modelled time stays continuous. Numbers are exported as ``thunder_sim_`` metrics.

The lateness of every wake-up also goes into a fixed-bucket histogram (``LATENESS_BUCKETS_S``,
0.25 ms to 5 s, fine around the 20 ms re-sync threshold) so a client can compute lag quantiles
over any interval from two scrapes, and the last full window's p50/p99 are kept as gauges.
While the engine is busy, one INFO line every ``log_every_s`` wall seconds reports the lag
(p50/p99 of the window) and the lost share, so a log shows the instrument's health.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from thunder_sim.clock import ScaledClock

log = logging.getLogger("thunder_sim.server")

# Histogram upper bounds (seconds of wall lateness); +Inf is implicit (module docstring).
LATENESS_BUCKETS_S = (0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02,
                      0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class LagSettings:
    window_wall_s: float = 1.0
    max_lag_fraction: float = 0.10
    sustain_windows: int = 3
    auto_time_scale: bool = False
    min_time_scale: float = 1.0
    log_every_s: float = 10.0


class LagMonitor:
    def __init__(self, clock: ScaledClock, settings: LagSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or LagSettings()
        self.lag_total_s = 0.0            # cumulative lateness (wall seconds)
        self.lost_total_s = 0.0           # cumulative re-sync gaps while busy (wall seconds)
        self.planned_total_s = 0.0        # cumulative planned step wall time
        self.wakeups_total = 0
        self.max_lag_s = 0.0              # worst lateness seen in the last full window
        self.last_window_fraction = 0.0   # lost / planned over the last full window
        self.last_window_p50_s = 0.0      # lateness quantiles over the last full window
        self.last_window_p99_s = 0.0
        self.lateness_counts = [0] * (len(LATENESS_BUCKETS_S) + 1)   # last one: +Inf
        self.lateness_sum_s = 0.0
        self.warnings_total = 0
        self.scale_changes_total = 0
        self._win_start = clock.wall_s()
        self._win_lag = 0.0
        self._win_planned = 0.0
        self._win_max = 0.0
        self._win_samples: list[float] = []
        self._distorted_windows = 0
        self._log_start = self._win_start
        self._log_lost = 0.0
        self._log_planned = 0.0

    def record(self, late_s: float, step_wall_s: float, lost_wall_s: float = 0.0) -> None:
        late = late_s if late_s > 0 else 0.0
        self.lag_total_s += late
        self.lateness_sum_s += late
        self.lateness_counts[bisect.bisect_left(LATENESS_BUCKETS_S, late)] += 1
        self._win_samples.append(late)
        self.lost_total_s += lost_wall_s
        self.planned_total_s += step_wall_s
        self.wakeups_total += 1
        self._win_lag += lost_wall_s
        self._win_planned += step_wall_s
        self._win_max = max(self._win_max, late)
        now = self.clock.wall_s()
        if now - self._win_start >= self.settings.window_wall_s:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        fraction = self._win_lag / self._win_planned if self._win_planned > 0 else 0.0
        self.last_window_fraction = fraction
        self.max_lag_s = self._win_max
        samples = sorted(self._win_samples)
        self.last_window_p50_s = samples[len(samples) // 2] if samples else 0.0
        self.last_window_p99_s = samples[min(len(samples) - 1, len(samples) * 99 // 100)] \
            if samples else 0.0
        self._log_lost += self._win_lag
        self._log_planned += self._win_planned
        if now - self._log_start >= self.settings.log_every_s:
            if self._log_planned > 0:
                log.info("engine loop: lateness p50 %.1f ms p99 %.1f ms (last window), lost "
                         "%.1f%% of %.1f s planned step time over %.0f s, time scale %.2f",
                         1000 * self.last_window_p50_s, 1000 * self.last_window_p99_s,
                         100 * self._log_lost / self._log_planned, self._log_planned,
                         now - self._log_start, self.clock.time_scale)
            self._log_start, self._log_lost, self._log_planned = now, 0.0, 0.0
        self._win_start, self._win_lag, self._win_planned, self._win_max = now, 0.0, 0.0, 0.0
        self._win_samples = []
        if fraction <= self.settings.max_lag_fraction:
            self._distorted_windows = 0
            return
        self._distorted_windows += 1
        if self._distorted_windows < self.settings.sustain_windows:
            return
        self._distorted_windows = 0
        self.warnings_total += 1
        scale = self.clock.time_scale
        if self.settings.auto_time_scale and scale > self.settings.min_time_scale:
            new_scale = max(self.settings.min_time_scale, scale * 0.9 / (1.0 + fraction))
            self.clock.set_time_scale(new_scale)
            self.scale_changes_total += 1
            log.warning(
                "event-loop lag cost %.0f%% of the modelled step time (max lag %.1f ms); "
                "lowering --time-scale from %.2f to %.2f",
                100 * fraction, 1000 * self.max_lag_s, scale, new_scale,
            )
        else:
            log.warning(
                "event-loop lag cost %.0f%% of the modelled step time (max lag %.1f ms) at "
                "--time-scale %.2f: results are distorted; lower the scale or pass "
                "--auto-time-scale",
                100 * fraction, 1000 * self.max_lag_s, scale,
            )
