"""``program_snapshot(id)`` is the row ``snapshot()`` shows for that id, without the rest."""

from __future__ import annotations

from core_harness import Harness


def test_one_row_equals_the_snapshots_row_live_and_ended() -> None:
    h = Harness("thunder", backends={"a": 1000})
    for pid in ("p1", "p2", "p3"):
        h.start(pid, tags={"who": pid})
        h.request(pid, 300)
    h.finish("p1", prompt=290, completion=10, tool_call=True)
    h.advance(5.0)
    h.end("p2")
    h.start("p2")  # a new incarnation of an ended id
    rows = h.scheduler.snapshot().programs
    for pid in ("p1", "p2", "p3"):
        newest = max((r for r in rows if r.program_id == pid), key=lambda r: r.incarnation)
        assert h.scheduler.program_snapshot(pid) == newest
    h.end("p3")
    ended = [r for r in h.scheduler.snapshot().programs if r.program_id == "p3"][-1]
    assert h.scheduler.program_snapshot("p3") == ended
    assert h.scheduler.program_snapshot("nobody") is None


def test_longest_pause_and_paused_share_measure_fairness() -> None:
    """``paused_s`` adds up every pause; ``longest_pause_s`` is the longest single one (what
    the aging bound limits, the current one included) and ``paused_share`` the share of the
    program's life spent paused (to its end, or to now)."""
    h = Harness("thunder", {"a": 1000}, max_paused_s=300.0)
    h.start("big")
    h.request("big", 900)
    h.start("late")                       # starts at 0
    h.advance(10.0)
    h.request("late", 500)                # held from 10 s: "big" holds the pool
    h.tick(100.0)                         # the core's clock moves with its events
    row = h.program("late")
    assert row.paused_s == row.longest_pause_s == 100.0
    assert row.paused_share == 100.0 / 110.0
    h.tick(200.0)                         # 310 s: the aging bound forces it back
    late = h.program("late")
    assert late.status.value == "active"
    assert late.longest_pause_s == late.paused_s == 300.0
    h.tick(90.0)
    assert h.program("late").paused_share == 300.0 / 400.0
    h.end("late")
    h.tick(100.0)                         # an ended program's share stops at its end
    ended = h.program("late")
    assert ended.paused_share == 300.0 / 400.0 and ended.longest_pause_s == 300.0
