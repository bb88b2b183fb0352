"""The driver carries out the core's commands: held futures, levers, release, ticks.

``ScriptedCore`` (``thunder_testkit.cores``) is a fake core (it returns the commands a test
scripts, so each command's execution is checked in isolation); ``FakeSlotBackend`` is a fake
engine recording lever calls (fault injection: it can fail). The real core is exercised in
``test_service_lifecycle.py`` and the service tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from thunder_core.contract import ProgramEndStatus
from thunder_scheduler.backends.base import (
    BackendCapabilities,
    BackendInfo,
    BackendKind,
    BackendLoad,
    RequestHints,
    SlotOpResult,
    SlotState,
)
from thunder_scheduler.backends.monitor import BackendState
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.gate import GateError
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import (
    Admit,
    Hold,
    Offload,
    Pause,
    Prewarm,
    Release,
    Resume,
    SetPriority,
)
from thunder_scheduling.events import (
    BackendUpdated,
    ProgramEnded,
    ProgramStarted,
    RequestArrived,
    ToolStarted,
)
from thunder_scheduling.kv_tiers import KvTier
from thunder_testkit import until_async
from thunder_testkit.cores import ScriptedCore
from thunder_testkit.engines import FakeSGLang


class FakeSlotBackend:
    """A fake llama.cpp-like engine that records lever calls; ``fail`` injects errors."""

    kind = BackendKind.LLAMACPP

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.base_url = f"http://{name}.invalid"
        self.capabilities = BackendCapabilities(
            abort_by_request_id=False, request_priority=False, sessions=False,
            slot_offload=True, prefix_warmup=True, cached_tokens_in_usage=True,
        )
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    async def probe(self) -> BackendInfo:
        return BackendInfo(1000, 1, ("m",), 500)

    async def load(self) -> BackendLoad:
        return BackendLoad(None, None, None, None, None, None)

    def decorate(self, path: str, body: dict[str, Any], hints: RequestHints) -> dict[str, Any]:
        return body

    def request_headers(self, hints: RequestHints) -> dict[str, str]:
        return {}

    async def abort(self, request_id: str) -> None:
        self.calls.append(("abort", request_id))

    async def release_program(self, program_id: str, session_id: str | None,
                              slot_id: int | None) -> None:
        self.calls.append(("release", program_id, slot_id))
        if self.fail:
            raise RuntimeError("engine said no")

    async def aclose(self) -> None:
        pass

    async def save_slot(self, slot_id: int, filename: str) -> SlotOpResult:
        self.calls.append(("save", slot_id, filename))
        return SlotOpResult(slot_id, filename, 10, 100, 1.0)

    async def restore_slot(self, slot_id: int, filename: str) -> SlotOpResult:
        self.calls.append(("restore", slot_id, filename))
        return SlotOpResult(slot_id, filename, 10, 100, 1.0)

    async def erase_slot(self, slot_id: int) -> None:
        self.calls.append(("erase", slot_id))

    async def slots(self) -> list[SlotState]:
        return [SlotState(0, 500, False), SlotState(1, 500, False)]


class FakeHooks:
    """Records tool-manager hook calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def on_program_restoring(self, program_id: str) -> None:
        self.calls.append(("restoring", program_id))

    async def on_program_ended(self, program_id: str, reason: str) -> None:
        self.calls.append(("ended", program_id, reason))

    async def on_program_admitted(self, program_id: str, spec_hint: str | None) -> None:
        self.calls.append(("admitted", program_id, str(spec_hint)))

    def on_queue_demand(self, spec_name: str, queued_programs: int) -> None:
        self.calls.append(("demand", spec_name, str(queued_programs)))


def _driver(core: ScriptedCore, *backends: FakeSlotBackend, **kw: Any) -> Driver:
    return Driver(core, {b.name: b for b in backends}, ManualClock(100.0), ServiceMetrics(),
                  **kw)


def _arrived(pid: str, rid: str) -> RequestArrived:
    return RequestArrived(at=0.0, program_id=pid, request_id=rid, prompt_tokens_estimate=10)


def _sample(driver: Driver, name: str, **labels: str) -> float | None:
    return driver.metrics.registry.get_sample_value(name, labels)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_admit_in_the_same_call_resolves_at_once() -> None:
    core = ScriptedCore([[Admit("p", "p:1", "a", priority=3)]])
    driver = _driver(core, FakeSlotBackend("a"))
    future = driver.arrive("p", "p:1", _arrived("p", "p:1"))
    assert future.done() and future.result().backend == "a"
    assert driver.priority_of("p") == 3
    assert driver.held_count() == 0


async def test_hold_parks_until_a_later_admit() -> None:
    core = ScriptedCore([[Hold("p", "p:1", "paused")], [Admit("p", "p:1", "a")]])
    driver = _driver(core, FakeSlotBackend("a"))
    future = driver.arrive("p", "p:1", _arrived("p", "p:1"))
    assert not future.done()
    assert driver.held_count() == 1
    assert _sample(driver, "thunder_held_requests") == 1
    driver.feed(ProgramEnded(at=1.0, program_id="q"))  # any event whose answer admits p:1
    assert future.done() and future.result().request_id == "p:1"
    assert driver.held_count() == 0


async def test_release_fails_held_requests_with_409_and_frees_engine_state() -> None:
    backend = FakeSlotBackend("a")
    hooks = FakeHooks()
    core = ScriptedCore([[Hold("p", "p:1", "paused")],
                         [Release("p", "a", "lease expired")]])
    driver = _driver(core, backend, hooks=hooks)
    future = driver.arrive("p", "p:1", _arrived("p", "p:1"))
    driver.feed(ProgramEnded(at=1.0, program_id="p", status=ProgramEndStatus.OK))
    with pytest.raises(GateError) as caught:
        await future
    assert caught.value.status == 409
    await _settle()
    assert ("release", "p", None) in backend.calls
    assert ("ended", "p", "lease expired") in hooks.calls
    assert _sample(driver, "thunder_lease_expiries_total") == 1


async def test_failing_lever_is_counted_and_does_not_crash() -> None:
    backend = FakeSlotBackend("a", fail=True)
    core = ScriptedCore([[Release("p", "a", "ended")]])
    driver = _driver(core, backend)
    driver.feed(ProgramEnded(at=1.0, program_id="p"))
    await _settle()
    assert _sample(driver, "thunder_engine_lever_failures_total", lever="release") == 1


async def test_slot_offload_saves_on_pause_and_restores_on_resume() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Pause("p", "a", 100)],
        [Resume("p", "a", "a", migrated=False)],
    ])
    driver = _driver(core, backend, slot_offload=True, total_slots=lambda name: 2)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    slot = driver.slot_of("p", "a")
    assert slot == 0
    driver.feed(ProgramEnded(at=1.0, program_id="x"))  # -> Pause
    await _settle()
    driver.feed(ProgramEnded(at=2.0, program_id="x"))  # -> Resume
    await _settle()
    kinds = [call[0] for call in backend.calls]
    assert kinds == ["save", "restore"]
    assert backend.calls[0][2] == backend.calls[1][2]  # same file
    assert _sample(driver, "thunder_pauses_total") == 1
    assert _sample(driver, "thunder_restores_total") == 1


async def test_programs_spread_over_slots_and_migration_drops_the_slot() -> None:
    a, b = FakeSlotBackend("a"), FakeSlotBackend("b")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Admit("q", "q:1", "a")],
        [Resume("p", "b", "a", migrated=True)],
    ])
    driver = _driver(core, a, b, slot_offload=True, total_slots=lambda name: 2)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    driver.arrive("q", "q:1", _arrived("q", "q:1"))
    assert {driver.slot_of("p", "a"), driver.slot_of("q", "a")} == {0, 1}
    driver.feed(ProgramEnded(at=1.0, program_id="x"))
    assert driver.slot_of("p", "b") is None
    assert _sample(driver, "thunder_migrations_total") == 1


async def test_set_priority_applies_to_later_requests() -> None:
    core = ScriptedCore([[SetPriority("p", -5)]])
    driver = _driver(core, FakeSlotBackend("a"))
    driver.feed(ProgramEnded(at=1.0, program_id="x"))
    assert driver.priority_of("p") == -5


async def test_prewarm_without_a_known_body_sends_nothing() -> None:
    core = ScriptedCore([[Prewarm("p", "a")]])
    driver = _driver(core, FakeSlotBackend("a"))
    driver.feed(ProgramEnded(at=1.0, program_id="x"))
    await _settle()
    assert _sample(driver, "thunder_prewarms_total") == 0


async def test_ticker_runs_tick_at_the_core_deadline() -> None:
    clock = ManualClock(0.0, time_scale=1000.0)  # 1 modelled s = 1 wall ms
    core = ScriptedCore(deadline=5.0)
    driver = Driver(core, {}, clock, ServiceMetrics(), tick_s=60.0)
    driver.start()
    try:
        await until_async(lambda: core.ticks, interval_s=0.001, what="the ticker to call tick()")
    finally:
        await driver.aclose()


async def test_queued_programs_are_reported_per_spec_and_prepared_at_first_admission() -> None:
    hooks = FakeHooks()
    core = ScriptedCore([
        [], [],                                   # two programs start for spec "repo"
        [Admit("p", "p:1", "a")],                 # p's first request is admitted
        [Admit("p", "p:2", "a")],                 # later requests change nothing
        [Release("q", None, "lease_expired")],    # q never ran
    ])
    driver = _driver(core, FakeSlotBackend("a"), hooks=hooks)
    for pid in ("p", "q"):
        driver.feed(ProgramStarted(at=0.0, program_id=pid, tags={"runtime_spec": "repo"}))
    assert driver.queued_programs("repo") == 2
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    driver.arrive("p", "p:2", _arrived("p", "p:2"))
    assert driver.queued_programs("repo") == 1
    driver.feed(ProgramEnded(at=1.0, program_id="q"))
    assert driver.queued_programs("repo") == 0
    await _settle()
    demand = [call[2] for call in hooks.calls if call[0] == "demand"]
    assert demand == ["1", "2", "1", "0"]  # sync hook: in event order
    others = [call for call in hooks.calls if call[0] != "demand"]  # async hooks
    assert others == [("admitted", "p", "repo"), ("ended", "q", "lease_expired")]


async def test_a_start_event_after_the_first_request_prepares_at_once() -> None:
    hooks = FakeHooks()
    core = ScriptedCore([[Admit("p", "p:1", "a")], []])
    driver = _driver(core, FakeSlotBackend("a"), hooks=hooks)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))  # implicit start: no spec known yet
    driver.feed(ProgramStarted(at=0.0, program_id="p", tags={"runtime_spec": "repo"}))
    await _settle()
    assert hooks.calls == [("admitted", "p", "repo")]
    assert driver.queued_programs("repo") == 0


async def test_runtime_ids_of_tool_starts_are_kept() -> None:
    core = ScriptedCore([[], []])
    driver = _driver(core, FakeSlotBackend("a"))
    driver.feed(ToolStarted(at=0.0, program_id="p", call_id="c1", tool_name="bash",
                            runtime_ids=("rt-1",)))
    driver.note_runtime("p", "rt-2")
    driver.note_runtime("p", "rt-1")  # acquired and named again: listed once
    assert driver.runtime_ids("p") == ["rt-1", "rt-2"]


async def test_a_shared_slot_is_erased_only_by_its_last_program() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Admit("q", "q:1", "a")],
        [Release("p", "a", "ended")],
        [Release("q", "a", "ended")],
    ])
    driver = _driver(core, backend, slot_offload=True, total_slots=lambda name: 1)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    driver.arrive("q", "q:1", _arrived("q", "q:1"))
    assert driver.slot_of("p", "a") == driver.slot_of("q", "a") == 0
    driver.feed(ProgramEnded(at=1.0, program_id="p"))
    await _settle()
    assert backend.calls == [("release", "p", None)]  # q still uses slot 0: keep its KV
    driver.feed(ProgramEnded(at=2.0, program_id="q"))
    await _settle()
    assert backend.calls[-1] == ("release", "q", 0)  # the last one erases it


# -- the host tier: the core's KV place drives the slot (docs/host-tier.md) ----------------------


def _slot_driver(core: ScriptedCore, backend: FakeSlotBackend) -> Driver:
    driver = _driver(core, backend, slot_offload=True, total_slots=lambda name: 2)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    return driver


async def _step(driver: Driver, at: float) -> None:
    driver.feed(ProgramEnded(at=at, program_id="x"))  # any event: the next scripted commands
    await _settle()


async def test_kv_to_host_saves_the_slot_and_the_prewarm_restores_it_before_the_return() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Pause("p", "a", 100, kv_tier=KvTier.HOST)],
        [Prewarm("p", "a")],                        # ahead of the predicted tool end
        [Resume("p", "a", "a", migrated=False)],
    ])
    driver = _slot_driver(core, backend)
    for at in (1.0, 2.0, 3.0):
        await _step(driver, at)
    assert [call[0] for call in backend.calls] == ["save", "restore"]  # not restored twice
    assert _sample(driver, "thunder_paused_kv_total", place="host") == 1
    assert _sample(driver, "thunder_host_kv_transfers_total", direction="offload") == 1
    assert _sample(driver, "thunder_host_kv_transfers_total", direction="load_back") == 1
    assert _sample(driver, "thunder_prewarms_total") == 0  # the restore was the warm-up


@pytest.mark.parametrize("tier", ["device", "gone"])
async def test_kv_kept_on_the_device_or_dropped_is_not_saved(tier: str) -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Pause("p", "a", 100, kv_tier=KvTier(tier))],
        [Prewarm("p", "a")],
        [Resume("p", "a", "a", migrated=False)],
    ])
    driver = _slot_driver(core, backend)
    for at in (1.0, 2.0, 3.0):
        await _step(driver, at)
    assert backend.calls == []
    assert _sample(driver, "thunder_paused_kv_total", place=tier) == 1


async def test_a_save_from_an_earlier_pause_is_not_restored_once_the_kv_is_gone() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Pause("p", "a", 100, kv_tier=KvTier.HOST)],
        [Resume("p", "a", "a", migrated=False)],
        [Pause("p", "a", 200, kv_tier=KvTier.GONE)],
        [Resume("p", "a", "a", migrated=False)],
    ])
    driver = _slot_driver(core, backend)
    for at in (1.0, 2.0, 3.0, 4.0):
        await _step(driver, at)
    assert [call[0] for call in backend.calls] == ["save", "restore"]


async def test_a_pause_because_the_backend_went_away_calls_no_lever() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([[Admit("p", "p:1", "a")], [Pause("p", "a", 100, "backend_unhealthy")]])
    driver = _slot_driver(core, backend)
    await _step(driver, 1.0)
    assert backend.calls == []
    assert _sample(driver, "thunder_paused_kv_total", place="gone") == 1


async def test_an_acting_program_offloaded_to_host_has_its_slot_saved() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Offload("p", "a", 100)],
        [Prewarm("p", "a")],
    ])
    driver = _slot_driver(core, backend)
    await _step(driver, 1.0)
    await _step(driver, 2.0)
    assert [call[0] for call in backend.calls] == ["save", "restore"]


async def test_an_ended_program_s_saved_slot_is_erased_and_its_file_truncated() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Pause("p", "a", 100, kv_tier=KvTier.HOST)],
        [Release("p", "a", "ended")],
    ])
    driver = _slot_driver(core, backend)
    await _step(driver, 1.0)
    await _step(driver, 2.0)
    save, release, truncate = backend.calls
    assert release == ("release", "p", 0)
    assert truncate == ("save", 0, save[2])  # the erased slot saved over the program's file
    assert driver.tracked()["levers.llamacpp"] == 0


async def test_a_saved_file_waits_for_its_shared_slot_to_be_erased_then_is_truncated() -> None:
    backend = FakeSlotBackend("a")
    core = ScriptedCore([
        [Admit("p", "p:1", "a")],
        [Admit("q", "q:1", "a")],
        [Pause("p", "a", 100, kv_tier=KvTier.HOST)],
        [Release("p", "a", "ended")],
        [Release("q", "a", "ended")],
    ])
    driver = _driver(core, backend, slot_offload=True, total_slots=lambda name: 1)
    driver.arrive("p", "p:1", _arrived("p", "p:1"))
    driver.arrive("q", "q:1", _arrived("q", "q:1"))
    await _step(driver, 1.0)
    await _step(driver, 2.0)
    save = backend.calls[0]
    assert backend.calls[1:] == [("release", "p", None)]  # q still uses slot 0
    assert driver.tracked()["levers.llamacpp"] == 2       # q's pin and p's file
    await _step(driver, 3.0)
    assert backend.calls[2:] == [("release", "q", 0), ("save", 0, save[2])]
    assert driver.tracked()["levers.llamacpp"] == 0


async def test_backend_updates_carry_the_host_tier_to_the_core() -> None:
    core = ScriptedCore()
    driver = _driver(core, FakeSlotBackend("a"))
    info = BackendInfo(1000, 1, ("m",), 500, host_capacity_tokens=4000)
    await driver.on_backend_change("a", BackendState("a", True, info, None, None, 0, 0.0))
    [event] = core.events
    assert isinstance(event, BackendUpdated)
    assert (event.capacity_tokens, event.host_capacity_tokens) == (1000, 4000)


@pytest.mark.parametrize(("tier", "reason", "closed"), [
    ("host", "overflow", True), ("gone", "overflow", True), ("device", "overflow", False),
    ("gone", "backend_unhealthy", False),  # the engine is not there to answer
])
async def test_an_sglang_program_paused_off_the_device_releases_its_session(
    tier: str, reason: str, closed: bool,
) -> None:
    fake = FakeSGLang(enable_session_radix_cache=True)
    backend = SGLangBackend("a", "http://a:30000", httpx.AsyncClient(transport=fake.transport()))
    await backend.probe()
    core = ScriptedCore([[Pause("p", "a", 100, reason, kv_tier=KvTier(tier))]])
    driver = Driver(core, {"a": backend}, ManualClock(0.0), ServiceMetrics())
    session = (await driver.engine_hints("p", backend)).session_id
    assert session in fake.open_sessions
    await _step(driver, 1.0)
    # unreferenced, HiCache demotes its radix nodes to host before the running programs'
    assert (session not in fake.open_sessions) is closed
    assert driver.levers[BackendKind.SGLANG].hints("p", backend).session_id == (
        None if closed else session)
