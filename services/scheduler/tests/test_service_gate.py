"""``SchedulerGate``: a held ``acquire`` cancelled by its client, and upstream failure reports.

The real gate and driver; ``ScriptedCore`` (``thunder_testkit.cores``) is a fake core, here
holding every request (so the gate's own cancellation handling is checked without staging
memory pressure), and
``FakeMonitor`` a fake backend monitor that records the failures it is told about.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from thunder_scheduler.backends.base import BackendInfo
from thunder_scheduler.backends.monitor import BackendState
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.gate import SchedulerGate
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import Command, Hold
from thunder_scheduling.events import Event, RequestArrived, RequestFinished, RequestOutcome
from thunder_testkit.cores import ScriptedCore


def _hold(event: Event) -> list[Command]:
    """Holds every request (the core knows every program)."""
    if isinstance(event, RequestArrived):
        return [Hold(event.program_id, event.request_id, "test holds everything")]
    return []


class FakeMonitor:
    """One healthy backend serving model ``m``; records ``report_failure`` calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: list[tuple[str, str]] = []
        self._state = BackendState(name, True, BackendInfo(1000, 1, ("m",), 1), None, None, 0, 0.0)

    def healthy_names(self) -> list[str]:
        return [self.name]

    def state(self, name: str) -> BackendState:
        return self._state

    def states(self) -> dict[str, BackendState]:
        return {self.name: self._state}

    async def report_failure(self, name: str, reason: str) -> None:
        self.failures.append((name, reason))


class _Backend:
    name = "a"


def _gate() -> tuple[SchedulerGate, Driver, ScriptedCore, FakeMonitor]:
    core = ScriptedCore(respond=_hold)
    backend: Any = _Backend()
    driver = Driver(core, {"a": backend}, ManualClock(10.0), ServiceMetrics())
    monitor = FakeMonitor("a")
    gate = SchedulerGate(driver, monitor, driver.metrics)  # type: ignore[arg-type]
    return gate, driver, core, monitor


async def test_cancelled_held_acquire_leaves_no_waiter_and_finishes_once() -> None:
    gate, driver, core, _ = _gate()
    rid = gate.new_request_id("p")
    task = asyncio.create_task(gate.acquire("p", rid, {"messages": [{"content": "x"}]}, "m"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert driver.held_count() == 1
    task.cancel()  # the client left while the program was held
    with pytest.raises(asyncio.CancelledError):
        await task
    assert driver.held_count() == 0
    # the proxy then finishes the request, with no placement
    gate.finish(None, "p", rid, RequestOutcome.DISCONNECTED, None, False)
    gate.finish(None, "p", rid, RequestOutcome.DISCONNECTED, None, False)  # a second is ignored
    finished = [e for e in core.events if isinstance(e, RequestFinished)]
    assert [(e.request_id, e.outcome) for e in finished] == [(rid, RequestOutcome.DISCONNECTED)]
    assert driver.metrics.registry.get_sample_value(
        "thunder_requests_total", {"outcome": "disconnected"}) == 2


async def test_upstream_failure_is_counted_and_told_to_the_monitor() -> None:
    gate, driver, _, monitor = _gate()
    gate.report_upstream_failure("a", "connection refused")
    gate.report_upstream_failure("nope", "unknown backends are ignored")
    for _ in range(5):
        await asyncio.sleep(0)
    assert monitor.failures == [("a", "connection refused")]
    assert driver.metrics.registry.get_sample_value(
        "thunder_upstream_failures_total", {"backend": "a"}) == 1
    await driver.aclose()


async def test_the_clients_rid_is_kept_unless_another_request_uses_it() -> None:
    gate, driver, _core, _ = _gate()
    assert gate.new_request_id("p", "rl-7") == "rl-7"
    task = asyncio.create_task(gate.acquire("p", "rl-7", {"messages": [{"content": "x"}]}, "m"))
    for _ in range(5):
        await asyncio.sleep(0)
    # while rl-7 is in flight (held here) a second request with it gets the scheduler's own id
    assert gate.new_request_id("p", "rl-7") == "p:2"
    assert gate.new_request_id("p", "x" * 257) == "p:3"  # too long to be an engine id
    assert gate.new_request_id("p", "r\udb1b+\u00d6") == "p:4"  # not printable ASCII
    assert gate.new_request_id("p", "a b") == "p:5"
    assert gate.new_request_id(None, "mine") == "mine"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.finish(None, "p", "rl-7", RequestOutcome.DISCONNECTED, None, False)
    assert gate.new_request_id("p", "rl-7") == "rl-7"  # free again
    assert driver.held_count() == 0
