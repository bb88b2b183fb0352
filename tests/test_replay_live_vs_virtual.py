"""Live and virtual replays of the same small workload agree (the instrument's validity check).

Live: real ``thunder-sim serve`` processes (the ``sim_fleet`` fixture) at time scale 20, the
replay's aiohttp client over loopback. Virtual: the same engine model behind the scheduling
core's ``sticky`` policy (pass-through, one engine: what a bare engine sees), on a virtual
clock. Steps/min and hit rate must agree within 10%.
"""

from __future__ import annotations

import asyncio

import pytest

from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import default_trace_dir
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

pytestmark = pytest.mark.slow

TIME_SCALE = 20.0


def test_live_and_virtual_agree_within_ten_percent(sim_fleet) -> None:  # type: ignore[no-untyped-def]
    fit = ContextFit(context_tokens=32_768, sessions=3, max_steps=8, seed=3).load(
        default_trace_dir())
    gaps = GapPolicy(tool_gap_cap_s=20.0)
    [url] = sim_fleet(1, time_scale=TIME_SCALE, extra_args=["--context-length", "32768"])
    live = asyncio.run(LiveReplay(fit.programs, LiveConfig(
        target=url, time_scale=TIME_SCALE, concurrency=3, gaps=gaps, engine_urls=(url,),
    )).run())
    virtual = VirtualReplay(fit.programs, VirtualConfig(
        policy="sticky", replicas=1, concurrency=3, gaps=gaps)).run()
    assert live.failed_steps == 0, live.extra.get("last_error")
    assert live.steps == virtual.steps == sum(p.total_steps for p in fit.programs)
    assert live.hit_rate == pytest.approx(virtual.hit_rate, rel=0.10)
    assert live.steps_per_min == pytest.approx(virtual.steps_per_min, rel=0.10)
