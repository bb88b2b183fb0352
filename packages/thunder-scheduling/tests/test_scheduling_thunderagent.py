"""The ``thunderagent`` comparison policy behaves as ThunderAgent's public scheduler does,
defects included (each test names the behaviour and the source line it follows)."""

from __future__ import annotations

from typing import Any

import pytest
from core_harness import Harness

from thunder_scheduling.commands import Admit, Hold, Pause
from thunder_scheduling.config import ConfigError

TICK_S = 5.0


def ta(backends: dict[str, int], **knobs: Any) -> Harness:
    return Harness("thunderagent", backends, **knobs)


def test_pauses_wait_for_the_fixed_tick_then_take_the_smallest_acting_program() -> None:
    h = ta({"a": 1000})
    for pid in ("p0", "p1", "p2"):
        h.request(pid, 200)  # 3 x (200 + 100 buffer) = 900: all placed at once
    assert len(h.of(Admit)) == 3
    h.finish("p0", 200, 100)  # acting, 300 tokens
    h.finish("p1", 200, 50)  # acting, 250 tokens: estimate 300 + 250 + 200 + 300 > 1000
    h.advance(2.0)
    assert not h.of(Pause)  # between ticks nothing is paused (router.py:660-682)
    h.tick(TICK_S - 2.0)
    paused = [c.program_id for c in h.of(Pause)]
    assert paused == ["p1"]  # smallest acting first, and only until the estimate fits


def test_once_no_acting_program_is_left_every_reasoning_program_is_marked() -> None:
    h = ta({"a": 1000})
    h.request("p0", 300)
    h.request("p1", 300)
    h.finish("p0", 600, 100)
    h.request("p0", 800)
    h.finish("p1", 300, 100)
    h.request("p1", 450)  # 800 + 450 + 200 > 1000, both reasoning
    h.tick(TICK_S)
    marked = sorted(p.program_id for p in h.scheduler.snapshot().programs if p.marked)
    assert marked == ["p0", "p1"]  # marking p1 alone would have been enough (defect kept)
    h.finish("p1", 450, 10)
    assert [c.program_id for c in h.of(Pause)] == ["p1"]  # paused when its response ends


def test_a_new_program_waits_behind_any_queue_even_with_room() -> None:
    h = ta({"a": 1000})
    h.request("p0", 300)
    h.request("p1", 900)  # 1000 - 400 < 900 + 100: queued
    commands = h.request("p2", 50)  # would fit, but the queue is not empty (router.py:264)
    assert [c.program_id for c in h.of(Hold, commands)] == ["p2"]
    h.tick(TICK_S)  # the resume pass: p1 does not fit, p2 does
    admitted = [c.program_id for c in h.of(Admit)]
    assert admitted == ["p0", "p2"]


def test_a_waiting_request_forces_its_program_back_after_the_timeout() -> None:
    h = ta({"a": 1000}, wait_timeout_s=60.0)
    h.request("p0", 850)
    h.request("p1", 500)  # never fits while p0 runs
    h.tick(55.0)
    assert [c.program_id for c in h.of(Admit)] == ["p0"]
    h.tick(10.0)  # 65 s: past the timeout at the next tick, regardless of capacity
    assert [c.program_id for c in h.of(Admit)] == ["p0", "p1"]
    assert h.counters().forced_restores == 1


def test_resume_places_largest_first_on_the_emptiest_backend_ignoring_locality() -> None:
    h = ta({"a": 2000, "b": 2000})
    h.request("p0", 400)  # a (ties: first backend)
    h.request("p1", 500)  # b (fewer active tokens)
    h.finish("p0", 400, 100)  # p0 acting on a, 500 tokens
    h.request("p2", 1200)  # a: 2000 - 600 >= 1300
    h.request("p3", 1300)  # b: 2000 - 600 >= 1400
    h.finish("p3", 1300, 200)  # b: 1500 + 500 + 200 > 2000 at the tick
    h.tick(TICK_S)
    assert [c.program_id for c in h.of(Pause)] == ["p3"]  # the only acting program on b
    for pid in ("p0", "p1", "p2"):
        h.end(pid)  # both backends empty: equal room, so the first one, not p3's own
    h.tick(TICK_S)
    resumed = [c for c in h.log if type(c).__name__ == "Resume"]
    assert [(c.program_id, c.backend) for c in resumed] == [("p3", "a")]


def test_config_validates_itself() -> None:
    from thunder_scheduling.policies.thunderagent import ThunderAgentConfig

    with pytest.raises(ConfigError, match="scheduler_interval_s"):
        ThunderAgentConfig(scheduler_interval_s=0)
    with pytest.raises(ConfigError, match="acting_token_weight"):
        ThunderAgentConfig(acting_token_weight=-1)
