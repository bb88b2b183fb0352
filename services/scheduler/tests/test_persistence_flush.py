"""A weight update (``BackendFlushed``) changes every live program's cached-prefix fields: the
recording core marks them all for the next write, so a restart does not bring the stale shared
prefixes back."""

from __future__ import annotations

from thunder_scheduler.persistence import RecordingCore
from thunder_scheduling import make_scheduler
from thunder_scheduling.events import (
    BackendFlushed,
    BackendUpdated,
    ProgramEnded,
    RequestArrived,
    RequestFinished,
)


def test_a_flush_marks_every_live_program_for_the_next_write() -> None:
    core = RecordingCore(make_scheduler("sticky"))
    core.handle(BackendUpdated(0.0, "a", True, 100_000))
    for index, pid in enumerate(("p1", "p2", "p3")):
        core.handle(RequestArrived(1.0, pid, f"{pid}:1", 700))
        core.handle(RequestFinished(2.0, pid, f"{pid}:1", prompt_tokens=700,
                                    completion_tokens=10, cached_tokens=0 if index == 0 else 640))
    core.handle(ProgramEnded(3.0, "p3"))
    core.touched.clear()

    core.handle(BackendFlushed(4.0, "a"))

    assert core.touched == {"p1", "p2"}
