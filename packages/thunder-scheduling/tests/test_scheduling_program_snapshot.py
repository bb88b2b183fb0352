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
