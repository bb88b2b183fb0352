"""The scaled clock and the event-loop lag monitor, on a hand-driven wall clock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thunder_sim.clock import ScaledClock
from thunder_sim.server.lag import LagMonitor, LagSettings


class ManualWall:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_scales_and_stays_continuous_when_rescaled() -> None:
    wall = ManualWall()
    clock = ScaledClock(20.0, wall)
    wall.t += 1.0
    assert clock.now_s() == pytest.approx(20.0)
    clock.set_time_scale(5.0)
    assert clock.now_s() == pytest.approx(20.0)
    wall.t += 2.0
    assert clock.now_s() == pytest.approx(30.0)
    assert clock.wall_at(35.0) == pytest.approx(wall.t + 1.0)
    with pytest.raises(ValueError, match="time_scale"):
        ScaledClock(0.0, wall)


def _drive(monitor: LagMonitor, wall: ManualWall, lost_fraction: float, seconds: int) -> None:
    for _ in range(seconds * 100):  # 10 ms steps
        wall.t += 0.01
        monitor.record(0.002, 0.01, lost_fraction * 0.01)


def test_sustained_lag_lowers_the_scale_only_with_auto() -> None:
    wall = ManualWall()
    clock = ScaledClock(20.0, wall)
    warn_only = LagMonitor(clock, LagSettings(auto_time_scale=False))
    _drive(warn_only, wall, 0.5, 4)
    assert warn_only.warnings_total == 1 and clock.time_scale == 20.0
    assert warn_only.last_window_fraction == pytest.approx(0.5, rel=0.05)

    auto = LagMonitor(clock, LagSettings(auto_time_scale=True, min_time_scale=2.0))
    _drive(auto, wall, 0.5, 4)
    assert clock.time_scale == pytest.approx(20.0 * 0.9 / 1.5, rel=0.05)
    assert auto.scale_changes_total == 1


def test_small_lag_is_not_a_distortion() -> None:
    wall = ManualWall()
    clock = ScaledClock(20.0, wall)
    monitor = LagMonitor(clock, LagSettings(auto_time_scale=True))
    _drive(monitor, wall, 0.05, 5)
    assert monitor.warnings_total == 0 and clock.time_scale == 20.0
    assert monitor.lag_total_s == pytest.approx(0.002 * 500)


@pytest.mark.parametrize(("flag", "value"), [("--time-scale", "0"), ("--port", "70000"),
                                             ("--preset", "tpu-v9-giant")])
def test_cli_rejects_bad_flags_naming_them(flag: str, value: str) -> None:
    r = subprocess.run([sys.executable, "-m", "thunder_sim", "serve", flag, value],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert flag in r.stderr
