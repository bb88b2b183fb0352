"""The prompt split's decision (``prompt_split.split_action``) and the room the core reports
for it (``ProgramScheduler.split_room``): the rule the live driver and the replay share."""

from __future__ import annotations

import math

from core_harness import Harness

from thunder_scheduling.prompt_split import SplitAction, SplitRoom, split_action


def _room(free: float = 1e9, expected: float | None = 1.0, keep: float = math.inf) -> SplitRoom:
    return SplitRoom("a", free, expected, keep)


def test_paused_then_cached_win_over_room() -> None:
    assert split_action(paused=True, cached=True, uncached_tokens=5, room=_room()) \
        is SplitAction.PAUSED
    assert split_action(paused=False, cached=True, uncached_tokens=0, room=_room(free=-1)) \
        is SplitAction.CACHED


def test_a_split_only_uses_room_no_active_program_holds() -> None:
    assert split_action(paused=False, cached=False, uncached_tokens=500,
                        room=_room(free=500)) is SplitAction.SENT
    assert split_action(paused=False, cached=False, uncached_tokens=501,
                        room=_room(free=500)) is SplitAction.NO_ROOM


def test_a_tool_that_outlasts_the_cores_keeping_of_the_kv_skips_the_split() -> None:
    assert split_action(paused=False, cached=False, uncached_tokens=1,
                        room=_room(expected=31.0, keep=30.0)) is SplitAction.TOOL_LONG
    assert split_action(paused=False, cached=False, uncached_tokens=1,
                        room=_room(expected=None, keep=30.0)) is SplitAction.SENT
    assert split_action(paused=False, cached=False, uncached_tokens=1,
                        room=_room(expected=29.0, keep=30.0)) is SplitAction.SENT
    assert split_action(paused=False, cached=False, uncached_tokens=1,
                        room=_room(expected=None, keep=math.inf)) is SplitAction.SENT


def test_without_the_cores_room_only_paused_and_cached_hold_it_back() -> None:
    assert split_action(paused=False, cached=False, uncached_tokens=10**9, room=None) \
        is SplitAction.SENT


def test_thunder_keeps_an_acting_programs_kv_for_the_rest_of_its_half_life() -> None:
    h = Harness("thunder", backends={"a": 100_000})
    h.start("p")
    h.request("p", 1000)
    h.finish("p", prompt=1000, completion=200, tool_call=True)
    room = h.scheduler.split_room("p", h.now, ["bash"])
    assert room is not None and room.backend == "a"
    assert room.free_tokens <= 100_000 - 1200
    assert room.expected_tool_s is None          # no bash call observed yet
    assert room.keep_s == 30.0                   # Thunder's default half-life, just started
    h.tool_start("p", "c1", "bash")
    h.advance(12.0)
    h.tool_end("p", "c1")                        # bash took 12 s: the estimate
    h.request("p", 1300)
    h.finish("p", prompt=1300, completion=50, tool_call=True)
    h.advance(10.0)
    room = h.scheduler.split_room("p", h.now, ["bash"])
    assert room is not None and room.expected_tool_s == 12.0 and room.keep_s == 20.0
    assert h.scheduler.split_room("nobody", h.now) is None


def test_a_full_acting_weight_keeps_the_kv_for_as_long_as_the_tool_runs() -> None:
    h = Harness("round_robin", backends={"a": 100_000})
    h.start("p")
    h.request("p", 1000)
    h.finish("p", prompt=1000, completion=200, tool_call=True)
    room = h.scheduler.split_room("p", h.now)
    assert room is not None and room.keep_s == math.inf
