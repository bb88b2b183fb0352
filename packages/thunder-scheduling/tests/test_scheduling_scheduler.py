"""The scheduler's state machine and driver contract, on the sticky and thunder policies."""

from __future__ import annotations

import pytest
from core_harness import Harness

from thunder_core.contract import ProgramEndStatus, ProgramPhase, ProgramStatus
from thunder_scheduling import ConfigError, UnknownProgram, make_scheduler, policy_names
from thunder_scheduling.commands import Admit, Hold, Pause, Release, Resume
from thunder_scheduling.events import (
    BackendUpdated,
    ProgramEnded,
    RequestOutcome,
    ToolStarted,
)


def test_registry_lists_every_policy_and_rejects_unknown_names_and_knobs() -> None:
    assert {"thunder", "sticky", "continuum", "autellix"} <= set(policy_names())
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):
        make_scheduler("nope")
    with pytest.raises(ConfigError, match="high_watermarks"):
        make_scheduler("thunder", high_watermarks=0.9)
    with pytest.raises(ConfigError, match="low_watermark"):
        make_scheduler("thunder", low_watermark=0.99, high_watermark=0.9)
    with pytest.raises(ConfigError, match="lease_s"):
        make_scheduler("thunder", lease_s=0)


def test_sticky_program_keeps_its_backend_and_new_programs_go_to_most_free() -> None:
    h = Harness("sticky", {"a": 1000, "b": 2000})
    (first,) = h.of(Admit, h.request("p1", 500))
    assert first.backend == "b"
    h.finish("p1", 500, 100)
    (second,) = h.of(Admit, h.request("p2", 500))
    assert second.backend == "b"  # b: 2000 - 600 = 1400 free > a: 1000; then b has 900 left
    (third,) = h.of(Admit, h.request("p3", 900))
    assert third.backend == "a"
    h.finish("p3", 900, 50)
    # p1 stays on b even though a has more room now: it sticks.
    (again,) = h.of(Admit, h.request("p1", 700))
    assert again.backend == "b"
    assert h.counters().pauses == 0


def test_request_for_unknown_program_starts_it_and_lifecycle_events_need_a_known_one() -> None:
    h = Harness("thunder")
    h.request("p1", 10)
    assert h.scheduler.has_program("p1")
    assert h.program("p1").framework == "other"
    with pytest.raises(UnknownProgram):
        h.scheduler.handle(ToolStarted(0.0, "ghost", "c1", "bash"))
    with pytest.raises(UnknownProgram):
        h.scheduler.handle(ProgramEnded(0.0, "ghost"))


def test_phase_follows_events_and_a_stream_without_usage_leaves_reasoning() -> None:
    h = Harness("thunder")
    h.request("p1", 100)
    assert h.program("p1").phase is ProgramPhase.REASONING
    h.finish("p1", None, None)  # stream ended without a usage chunk
    row = h.program("p1")
    assert row.phase is ProgramPhase.ACTING
    assert not row.tokens_exact and row.context_tokens == 100
    h.tool_start("p1", "c1", "bash")
    assert h.program("p1").current_tool == "bash"
    h.tool_end("p1", "c1")
    assert h.program("p1").phase is ProgramPhase.REASONING


def test_client_disconnect_ends_the_request_not_the_program() -> None:
    h = Harness("thunder")
    h.request("p1", 100)
    h.finish("p1", None, None, outcome=RequestOutcome.DISCONNECTED)
    row = h.program("p1")
    assert row.status is ProgramStatus.ACTIVE
    assert row.in_flight_requests == 0 and row.phase is ProgramPhase.ACTING
    assert h.of(Admit, h.request("p1", 120))


def test_ended_program_is_released_and_its_id_starts_a_new_incarnation() -> None:
    h = Harness("thunder")
    h.request("p1", 100)
    h.finish("p1", 100, 10)
    (release,) = h.of(Release, h.end("p1"))
    assert release.backend == "a" and release.reason == "ended"
    assert not h.scheduler.has_program("p1")
    assert h.backend("a").active_tokens == 0
    h.request("p1", 50)
    rows = [p for p in h.scheduler.snapshot().programs if p.program_id == "p1"]
    assert [(r.incarnation, r.status) for r in rows] == [
        (0, ProgramStatus.TERMINATED),
        (1, ProgramStatus.ACTIVE),
    ]
    assert rows[0].end_status is ProgramEndStatus.OK


def test_lease_expires_idle_programs_but_not_ones_with_a_request_in_flight() -> None:
    h = Harness("thunder", lease_s=60)
    h.start("short", lease_s=10)
    h.request("busy", 100)
    h.request("idle", 100)
    h.finish("idle", 100, 10)
    assert h.scheduler.next_deadline() == pytest.approx(10.0)
    (expired,) = h.of(Release, h.tick(10.0))
    assert expired.program_id == "short" and expired.reason == "lease_expired"
    releases = h.of(Release, h.tick(50.0))
    assert [r.program_id for r in releases] == ["idle"]
    assert h.scheduler.has_program("busy")  # its request is still running
    h.tick(1000.0)
    assert h.scheduler.has_program("busy")
    assert h.counters().lease_expiries == 2


def test_release_names_held_requests_so_the_driver_fails_them() -> None:
    h = Harness("thunder", {"a": 1000})
    h.request("big", 700)
    (hold,) = h.of(Hold, h.request("late", 700))
    (release,) = h.of(Release, h.end("late"))
    assert release.held_request_ids == (hold.request_id,)
    assert release.backend is None


def test_unhealthy_backend_moves_its_programs_and_loses_none() -> None:
    h = Harness("thunder", {"a": 1000, "b": 1000})
    h.request("p1", 200)
    h.request("p2", 200)
    on = {c.program_id: c.backend for c in h.of(Admit)}
    assert on == {"p1": "a", "p2": "b"}
    h.finish("p1", 200, 10)  # p1 idle, p2 still in flight on b
    h.finish("p2", 200, 10)
    h.request("p2", 250)
    commands = h.backend_update("a", 1000, healthy=False)
    pauses = h.of(Pause, commands)
    assert [(p.program_id, p.reason) for p in pauses] == [("p1", "backend_unhealthy")]
    (resume,) = h.of(Resume, commands)
    assert resume.program_id == "p1" and resume.backend == "b" and resume.migrated
    (admit,) = h.of(Admit, h.request("p1", 300))
    assert admit.backend == "b"
    ids = [p.program_id for p in h.scheduler.snapshot().programs]
    assert sorted(ids) == ["p1", "p2"]


def test_untagged_requests_go_to_the_backend_with_most_free_kv() -> None:
    h = Harness("thunder", {"a": 1000, "b": 800})
    assert h.scheduler.route_untagged(0.0) == "a"
    h.request("p1", 500)
    assert h.scheduler.route_untagged(0.0) == "b"
    h.backend_update("a", 1000, healthy=False)
    h.backend_update("b", 800, healthy=False)
    assert h.scheduler.route_untagged(0.0) is None


def test_duplicate_request_id_is_rejected() -> None:
    h = Harness("thunder")
    h.request("p1", 10, rid="r1")
    with pytest.raises(ValueError, match="already arrived"):
        h.request("p1", 10, rid="r1")


def test_aging_fires_exactly_at_the_deadline_it_reports() -> None:
    """Regression: ``since + bound`` and ``now - bound`` round differently in floating point;
    a tick at the reported deadline must force the waiter back (else a virtual loop ticks
    forever at the same instant)."""
    h = Harness("thunder", {"a": 1000}, max_paused_s=300.0)
    h.request("big", 900)
    h.now = 166.17591186942903
    assert h.of(Hold, h.request("late", 500))
    h.now += 300.0             # the aging deadline next_deadline() reports
    assert h.now - 300.0 < 166.17591186942903
    h.tick()
    assert h.program("late").status is ProgramStatus.ACTIVE


def test_backend_host_tier_is_recorded_and_bad_values_are_refused() -> None:
    h = Harness("thunder")
    h.feed(BackendUpdated(h.now, "b0", True, 1000, 1, host_capacity_tokens=3000,
                          host_load_tokens_per_s=2e6))
    ledger = h.scheduler._ledgers["b0"]
    assert (ledger.host_capacity_tokens, ledger.host_load_tokens_per_s) == (3000, 2e6)
    with pytest.raises(ValueError, match="host_capacity_tokens must be >= 0"):
        h.feed(BackendUpdated(h.now, "b0", True, 1000, 1, host_capacity_tokens=-1))
    with pytest.raises(ValueError, match="host_load_tokens_per_s must be > 0"):
        h.feed(BackendUpdated(h.now, "b0", True, 1000, 1, host_load_tokens_per_s=0.0))
