"""The thunder policy, and one test per ThunderAgent defect this port fixes
(docs/scheduling.md, "The thunder policy")."""

from __future__ import annotations

from typing import Any

from core_harness import Harness

from thunder_core.contract import ProgramStatus
from thunder_scheduling.commands import Admit, Hold, Pause, Prewarm, Resume, SetPriority

PINNED = {"high_watermark": 0.95, "low_watermark": 0.80, "acting_half_life_s": 1.0}
"""The knobs these scenarios were written for (the shipped defaults are chosen by the replay
sweep and may move; the behaviour tested here must hold at any setting)."""


def _thunder(backends: dict[str, int], **knobs: Any) -> Harness:
    return Harness("thunder", backends, **{**PINNED, **knobs})


def busy_backend(n: int, tokens: int, capacity: int = 1000, **knobs: object) -> Harness:
    """``n`` programs with a request in flight each on one backend."""
    h = _thunder({"a": capacity}, **knobs)
    for i in range(n):
        h.request(f"p{i}", tokens)
    return h


def test_watermarks_with_hysteresis_pause_only_above_high_and_down_to_low() -> None:
    h = busy_backend(4, 200)  # 800 = the low watermark: all admitted
    assert len(h.of(Admit)) == 4
    h.finish("p0", 200, 140)  # 940 <= 950: no pause yet
    assert not h.of(Pause) and h.counters().marks == 0
    h.request("p0", 400)  # 1000 + ... > 950: pause down to 800
    snap = h.scheduler.snapshot()
    marked = [p.program_id for p in snap.programs if p.marked]
    assert marked == ["p1"]  # smallest reasoning program (ties: oldest); one is enough


def test_defect_over_pausing_when_no_acting_program_is_left() -> None:
    # ThunderAgent ignored programs already marked: with only reasoning programs left it
    # marked every one of them. We count marks and pause only what the overflow needs.
    h = busy_backend(5, 150, capacity=1000)  # 750, all reasoning with a request in flight
    h.request("p0", 450)  # a second request of p0 raises it to 450: 1050 > 950, need 250
    for _ in range(5):
        h.tick(0.1)  # repeated decisions must not add marks
    snap = h.scheduler.snapshot()
    marked = sorted(p.program_id for p in snap.programs if p.marked)
    assert marked == ["p1", "p2"]  # 2 x 150 covers 250; nothing more
    assert h.counters().marks == 2
    assert not h.of(Pause)  # nothing cut: they pause when their responses end


def test_pause_order_acting_before_reasoning_smallest_first() -> None:
    h = _thunder({"a": 1000}, acting_half_life_s=1e9)  # no decay: plain sizes
    for pid, tokens in [("r_small", 100), ("r_big", 200), ("a_big", 250), ("a_small", 150)]:
        h.request(pid, tokens)
    for pid, tokens in [("a_big", 250), ("a_small", 150)]:
        h.finish(pid, tokens, 0)  # now acting (outside the LLM)
    h.request("r_small", 400)  # 400 + 200 + 250 + 150 = 1000 > 950: need 200
    pauses = h.of(Pause)
    assert [p.program_id for p in pauses] == ["a_big"]  # a_small (150) alone is not enough,
    # a_small + a_big is redundant once a_big covers it: only a_big is paused.


def test_in_flight_request_is_never_cut_its_program_is_paused_at_response_end() -> None:
    h = busy_backend(4, 200)
    first = h.last_request("p1")
    h.request("p0", 500)  # 1100 > 950: need 300: p1 and p2 (in flight) are marked
    assert not h.of(Pause)
    (hold,) = h.of(Hold, h.request("p1", 300, rid="p1:second"))
    assert hold.reason == "pausing"
    (pause,) = h.of(Pause, h.finish("p1", 200, 10, rid=first))
    assert pause.program_id == "p1"
    assert h.program("p1").status is ProgramStatus.PAUSED
    assert h.pending == {"p1:second": "p1"}  # still held, never failed
    h.end("p0")  # room: p1 comes back and its held request goes out
    assert "p1:second" in h.in_flight
    assert h.program("p1").status is ProgramStatus.ACTIVE


def test_defect_resume_and_tick_never_raise_and_do_restore() -> None:
    h = busy_backend(4, 200)
    h.request("late", 150)  # 950 > 800: waits
    for _ in range(20):
        h.tick(0.5)  # ThunderAgent's resume loop raised on every tick
    assert h.program("late").status is ProgramStatus.PAUSED
    h.end("p0")
    assert h.program("late").status is ProgramStatus.ACTIVE
    assert "late" in {c.program_id for c in h.of(Admit)}


def test_defect_stream_without_usage_does_not_leave_the_program_reasoning() -> None:
    h = busy_backend(4, 200)
    h.request("late", 150)
    assert h.program("late").status is ProgramStatus.PAUSED
    h.finish("p0", None, None)  # no usage: the program is outside the LLM anyway
    h.advance(10.0)  # its weight decays (half-life 1 s): room for the waiting program
    h.tick()
    assert h.program("late").status is ProgramStatus.ACTIVE


def test_defect_abandoned_programs_expire_even_when_paused() -> None:
    h = busy_backend(4, 200, lease_s=100)
    h.request("p0", 500)  # marks p1 and p2
    h.finish("p1", 200, 10)  # marked p1 is paused at its response end
    assert h.program("p1").status is ProgramStatus.PAUSED
    for _ in range(12):
        h.tick(10.0)
    assert not h.scheduler.has_program("p1")
    assert h.program("p1").end_reason == "lease_expired"
    assert h.scheduler.has_program("p2")  # its request is still in flight


def test_defect_new_program_is_admitted_on_arrival_without_waiting_for_a_tick() -> None:
    h = busy_backend(3, 200)
    h.request("huge", 700)  # cannot fit: waits
    (admit,) = h.of(Admit, h.request("small", 100))
    assert admit.program_id == "small"  # same call, no tick in between


def _promoted_waiter(**knobs: Any) -> Harness:
    """``large`` (600) has waited past ``promote_after_s`` for room on a full backend (low
    watermark 800); ``s0`` then ends, leaving 500 of room: not enough for it."""
    h = _thunder({"a": 1000}, acting_half_life_s=1e9, promote_after_s=60.0, **knobs)
    h.request("s0", 300)
    h.request("s1", 300)
    h.request("large", 600)
    assert h.program("large").status is ProgramStatus.PAUSED
    h.advance(90.0)
    h.finish("s0", 300, 0)
    h.end("s0")
    return h


def test_a_new_program_does_not_take_room_a_promoted_waiter_is_owed() -> None:
    h = _promoted_waiter()
    (hold,) = h.of(Hold, h.request("newcomer", 200))  # 200 fits, but "large" is owed it
    assert hold.program_id == "newcomer"
    assert h.program("newcomer").status is ProgramStatus.PAUSED
    commands = h.finish("s1", 300, 0) + h.end("s1")  # room for "large", then for the newcomer
    assert [a.program_id for a in h.of(Admit, commands)] == ["large", "newcomer"]


def test_a_new_program_joins_the_queue_and_is_placed_in_the_same_call_when_nobody_is_owed() -> None:
    h = _thunder({"a": 1000}, acting_half_life_s=1e9)
    h.request("p0", 600)
    h.request("big", 500)  # does not fit: waits, not yet promoted
    commands = h.request("small", 200)  # joins the queue; the restore pass places it at once
    assert [c.program_id for c in h.of(Admit, commands)] == ["small"]
    assert not h.of(Hold, commands)  # one answer per arrival: the Admit
    assert h.counters().held_requests == 1  # "big" only


def test_arrivals_join_queue_off_places_a_newcomer_ahead_of_a_promoted_waiter() -> None:
    h = _promoted_waiter(arrivals_join_queue=False)
    (admit,) = h.of(Admit, h.request("newcomer", 200))
    assert admit.program_id == "newcomer"
    assert h.program("large").status is ProgramStatus.PAUSED


def test_defect_large_program_is_not_starved_by_a_stream_of_small_ones() -> None:
    h = _thunder({"a": 1000}, max_paused_s=300.0)
    h.request("s0", 300)
    h.request("s1", 300)
    (hold,) = h.of(Hold, h.request("large", 500))
    waited = 0.0
    turn = 0
    while h.program("large").status is ProgramStatus.PAUSED and waited < 400:
        # Small programs keep finishing and new small ones keep arriving.
        old = f"s{turn}"
        h.advance(5.0)
        waited += 5.0
        h.finish(old, 300, 5)
        h.end(old)
        h.request(f"s{turn + 2}", 300)
        turn += 1
    assert h.program("large").status is ProgramStatus.ACTIVE
    assert waited <= 300.0
    assert hold.request_id in h.in_flight


def test_defect_resume_prefers_the_backend_where_the_kv_still_lives() -> None:
    h = _thunder({"a": 1000, "b": 1000})
    for pid, tokens in [("p1", 300), ("p2", 360), ("p3", 300), ("p4", 360)]:
        h.request(pid, tokens)
    assert {c.program_id: c.backend for c in h.of(Admit)} == {
        "p1": "a", "p2": "b", "p3": "a", "p4": "b"
    }
    h.finish("p1", 300, 0)
    h.finish("p3", 300, 360)  # a: 300 + 660 > 950: pause acting p1; fits nowhere yet
    (pause,) = h.of(Pause)
    assert (pause.program_id, pause.backend) == ("p1", "a")
    assert not h.of(Resume)
    h.tick(2.0)  # decay: p1 fits a (room 560 left) and b (room 5 left: the best fit)
    (resume,) = h.of(Resume)
    assert (resume.program_id, resume.backend, resume.migrated) == ("p1", "a", False)


def test_restore_migrates_best_fit_when_the_previous_backend_is_full() -> None:
    h = _thunder({"a": 1000}, acting_half_life_s=1e9)
    h.request("p1", 300)
    h.request("p2", 450)
    h.backend_update("b", 1000)
    h.backend_update("c", 1000)
    h.request("filler_b", 500)  # b (b and c tie: name order)
    h.request("filler_c", 100)  # c (most room)
    h.finish("p1", 300, 0)
    commands = h.finish("p2", 450, 300)  # a: 300 + 750 > 950: pause acting p1
    assert [p.program_id for p in h.of(Pause, commands)] == ["p1"]
    (resume,) = h.of(Resume, commands)  # restored at once elsewhere
    # best fit: b is left with 0 room, c with 400: b, although c is emptier.
    assert (resume.program_id, resume.backend, resume.migrated) == ("p1", "b", True)
    assert h.counters().migrations == 1


def test_decay_is_used_identically_so_a_restore_is_not_undone_at_once() -> None:
    h = _thunder({"a": 1000})
    for i in range(4):
        h.request(f"p{i}", 200)
    for i in range(4):
        h.finish(f"p{i}", 200, 0)
    h.request("late", 300)  # 800 + 300 > 800 at first; decay frees room over time
    for _ in range(40):
        h.tick(0.25)
    pauses_before = h.counters().pauses
    restores = h.of(Admit)
    assert "late" in {c.program_id for c in restores}
    for _ in range(20):
        h.tick(0.25)
    assert h.counters().pauses == pauses_before == 0


def test_paused_acting_program_is_prewarmed_before_its_tool_ends() -> None:
    h = _thunder({"a": 1000}, acting_half_life_s=1e9, prewarm_lead_s=2.0)
    h.request("tool", 200)
    h.request("r1", 300)
    h.request("r2", 250)
    h.finish("tool", 200, 0, tool_call=True)
    h.tool_start("tool", "c1", "pytest", expected_duration_s=30.0)
    h.request("r1", 550)  # 200 + 550 + 250 = 1000 > 950: need 200: pause acting "tool"
    assert [p.program_id for p in h.of(Pause)] == ["tool"]
    h.end("r2")  # room: "tool" is restored while its tool still runs
    assert [r.program_id for r in h.of(Resume)] == ["tool"]
    assert h.scheduler.next_deadline() == 28.0
    assert not h.of(Prewarm, h.tick(27.9))
    assert h.of(Prewarm, h.tick(0.1)) == [Prewarm("tool", "a")]


def test_tool_estimate_drives_the_pre_restore_of_a_paused_program() -> None:
    h = _thunder({"a": 1000}, acting_half_life_s=1e9, prewarm_lead_s=2.0)
    # Teach the estimator: "pytest" takes 20 s.
    h.request("t", 100)
    h.finish("t", 100, 0)
    h.tool_start("t", "c0", "pytest")
    h.advance(20.0)
    h.tool_end("t", "c0")
    h.end("t")
    assert h.scheduler.snapshot().tool_estimates_s == {"pytest": 20.0}
    h.request("tool", 200)
    h.request("r1", 300)
    h.request("r2", 250)
    h.finish("tool", 200, 0, tool_call=True)
    start = h.now
    h.tool_start("tool", "c1", "pytest")
    h.request("r1", 550)  # overflow: "tool" (acting) is paused
    h.request("r3", 60)  # keeps the room taken: "tool" stays paused
    assert h.program("tool").status is ProgramStatus.PAUSED
    h.finish("r2", 250, 0)
    h.end("r2")  # 550 + 60 + 200 = 810 > 800: still no room for the full weight
    assert h.program("tool").status is ProgramStatus.PAUSED
    h.end("r3")  # now 750: it fits, restored (acting: no prewarm until the deadline)
    assert h.program("tool").status is ProgramStatus.ACTIVE
    commands = h.tick(start + 18.0 - h.now)
    assert Prewarm("tool", "a") in commands


def test_engine_priority_lowered_for_marked_and_paused_programs() -> None:
    h = busy_backend(4, 200)
    commands = h.request("p0", 500)  # marks p1 and p2
    assert SetPriority("p1", -1000) in commands and SetPriority("p2", -1000) in commands
    (admit,) = h.of(Admit, h.request("p3", 250))
    assert admit.priority == 0


def test_aging_by_share_of_life_forces_back_when_half_the_life_was_paused() -> None:
    from thunder_scheduling.policies.thunder import ThunderConfig, ThunderPolicy

    policy = ThunderPolicy(ThunderConfig(max_paused_share=0.5, share_grace_s=10.0))
    # ran 100 s unpaused, then paused: half its life is paused at t = 200
    assert policy.aging_deadline(0.0, 100.0, 0.0, 300.0) == 200.0
    # 40 s paused before: 40 + (t - 100) = (t - 0) / 2 at t = 120
    assert policy.aging_deadline(0.0, 100.0, 40.0, 300.0) == 120.0
    # a new program waiting from its start: the grace period, not at once
    assert policy.aging_deadline(50.0, 50.0, 0.0, 300.0) == 60.0
    default = ThunderPolicy()
    assert default.aging_deadline(0.0, 100.0, 40.0, 300.0) == 400.0
