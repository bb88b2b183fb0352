"""ToolManager behaviour on the fake backend (fault injection) and the local-process backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from thunder_core.runtimes import ExecRequest, RuntimeSpec
from thunder_scheduler.tools.base import (
    BackendRuntime,
    BackendUnavailable,
    BudgetExhausted,
    BuildFailed,
    CreateFailed,
    ExecTimeout,
    ImageInfo,
    ProgramNotFound,
    RuntimeConflict,
    RuntimeLabels,
    RuntimeNotFound,
    SpecNotFound,
    program_key,
)
from thunder_scheduler.tools.local_process import LocalProcessBackend
from thunder_scheduler.tools.manager import ToolManager
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_testkit import until_async
from thunder_testkit.runtimes import FakeRuntimeBackend

SPEC = RuntimeSpec(name="repo-a", image="thunder-base:latest", ports=[8000])
BUILT = RuntimeSpec(name="built", dockerfile="FROM thunder-base:latest\n")


class Programs:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self) -> set[str]:
        return set(self.ids)


def make_manager(backend: FakeRuntimeBackend, programs: Programs, **knobs: object) -> ToolManager:
    settings = ToolManagerSettings(backend="none", label_prefix="tm", **knobs)  # type: ignore[arg-type]
    return ToolManager(settings, backend, known_programs=programs)


@pytest.fixture
async def env() -> AsyncIterator[tuple[ToolManager, FakeRuntimeBackend, Programs]]:
    backend, programs = FakeRuntimeBackend(), Programs()
    manager = make_manager(backend, programs)
    await manager.start()
    yield manager, backend, programs
    await manager.close()
    assert backend.runtimes == {}


async def test_acquire_exec_release(env: tuple[ToolManager, FakeRuntimeBackend, Programs]) -> None:
    manager, backend, programs = env
    programs.ids.add("p1")
    manager.register_spec(SPEC)
    view = await manager.acquire("p1", "repo-a")
    assert view.program_id == "p1" and view.source == "cold" and set(view.ports) == {"8000"}
    assert view.exec_path == f"/v1/programs/p1/runtimes/{view.runtime_id}/exec"
    result = await manager.exec("p1", view.runtime_id, ExecRequest(command="echo hi"))
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    assert [v.runtime_id for v in manager.list_runtimes("p1")] == [view.runtime_id]
    with pytest.raises(RuntimeNotFound):
        await manager.exec("other", view.runtime_id, ExecRequest(command="echo hi"))
    await manager.release("p1", view.runtime_id)
    assert backend.runtimes == {} and manager.list_runtimes("p1") == []


async def test_errors_are_typed(env: tuple[ToolManager, FakeRuntimeBackend, Programs]) -> None:
    manager, backend, programs = env
    manager.register_spec(SPEC)
    with pytest.raises(ProgramNotFound):
        await manager.acquire("ghost", "repo-a")
    programs.ids.add("p1")
    with pytest.raises(SpecNotFound):
        await manager.acquire("p1", "nope")
    view = await manager.acquire("p1", "repo-a")
    with pytest.raises(ExecTimeout):
        await manager.exec("p1", view.runtime_id, ExecRequest(command="sleep 5", timeout_s=0.05))
    backend.down = True
    with pytest.raises(BackendUnavailable):
        await manager.acquire("p1", "repo-a")
    backend.down = False
    # the program and its runtime survived every error
    assert [v.runtime_id for v in manager.list_runtimes("p1")] == [view.runtime_id]


async def test_failed_build_is_single_flight_and_retried_after_reregistering(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    programs.ids.update({"p1", "p2", "p3"})
    backend.fail_build.add("built")
    backend.build_delay_s = 0.05
    manager.register_spec(BUILT)
    results = await asyncio.gather(
        *(manager.acquire(p, "built") for p in ("p1", "p2", "p3")), return_exceptions=True
    )
    assert all(isinstance(r, BuildFailed) for r in results)
    assert backend.builds == 1
    assert backend.runtimes == {}
    backend.fail_build.clear()
    manager.register_spec(BUILT)
    views = await asyncio.gather(*(manager.acquire(p, "built") for p in ("p1", "p2", "p3")))
    assert backend.builds == 2 and len({v.runtime_id for v in views}) == 3


async def test_failed_setup_leaves_nothing(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    programs.ids.add("p1")
    manager.register_spec(SPEC.model_copy(update={"setup_commands": ["exit 4"]}))
    with pytest.raises(CreateFailed):
        await manager.acquire("p1", "repo-a")
    assert backend.runtimes == {} and manager.snapshot()["totals"]["held_runtimes"] == 0


async def test_warm_pool_hands_over_and_refills(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    programs.ids.update({"p1", "p2"})
    manager.register_spec(SPEC.model_copy(update={"pool_size": 2}))
    await until_async(lambda: manager.pools.ready_count("repo-a") == 2)
    view = await manager.acquire("p1", "repo-a")
    assert view.source == "pool"
    seen = {o.runtime_id: o.owner_key for o in await backend.list_runtimes("tm")}
    assert seen[view.runtime_id] == program_key("p1")
    await until_async(lambda: manager.pools.ready_count("repo-a") == 2)
    assert len(backend.runtimes) == 3


async def test_admission_prepares_the_runtime_before_the_first_acquire(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    backend.create_delay_s = 0.05
    programs.ids.add("p1")
    manager.register_spec(SPEC)
    await manager.on_program_admitted("p1", "repo-a")
    await until_async(lambda: manager.snapshot()["programs"].get("p1") is not None)
    view = await manager.acquire("p1", "repo-a")
    assert view.source == "prepared" and backend.creates == 1
    await manager.release("p1", view.runtime_id)
    await manager.on_program_restoring("p1")
    await until_async(lambda: manager.snapshot()["programs"].get("p1") is not None)
    assert (await manager.acquire("p1", "repo-a")).source == "prepared"


@pytest.mark.parametrize("reason", ["ok", "error", "cancelled", "lease_expired"])
async def test_program_end_tears_everything_down_for_every_reason(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs], reason: str,
) -> None:
    manager, backend, programs = env
    programs.ids.add("p1")
    manager.register_spec(SPEC)
    await manager.acquire("p1", "repo-a")
    await manager.acquire("p1", "repo-a")
    await manager.on_program_ended("p1", reason)
    await manager.on_program_ended("p1", reason)  # idempotent
    assert backend.runtimes == {} and manager.snapshot()["programs"] == {}
    with pytest.raises(RuntimeConflict):
        await manager.acquire("p1", "repo-a")


async def test_end_during_preparation_cancels_and_cleans_up(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    backend.create_delay_s = 60.0  # the preparation is still creating when the program ends
    programs.ids.add("p1")
    manager.register_spec(SPEC)
    await manager.on_program_admitted("p1", "repo-a")
    await until_async(lambda: backend.creates == 1, what="the preparation to start creating")
    await manager.on_program_ended("p1", "cancelled")
    assert backend.creates_cancelled == 1
    assert backend.runtimes == {}
    assert manager.snapshot()["programs"] == {}


async def test_budget_evicts_pool_before_refusing() -> None:
    backend, programs = FakeRuntimeBackend(), Programs()
    programs.ids.update({"p1", "p2", "p3"})
    manager = make_manager(backend, programs, max_runtimes=2)
    await manager.start()
    manager.register_spec(SPEC.model_copy(update={"pool_size": 2}))
    await until_async(lambda: manager.pools.ready_count("repo-a") == 2)
    other = RuntimeSpec(name="other", image="x")
    manager.register_spec(other)
    assert (await manager.acquire("p1", "other")).source == "cold"
    assert (await manager.acquire("p2", "other")).source == "cold"
    with pytest.raises(BudgetExhausted):
        await manager.acquire("p3", "other")
    await manager.close()
    assert backend.runtimes == {}


async def test_reconcile_adopts_known_and_reclaims_unknown() -> None:
    backend, programs = FakeRuntimeBackend(), Programs()
    image = ImageInfo("img", 0, False)
    for owner, rid in (("alive", "r1"), ("dead", "r2"), (None, "r3")):
        labels = RuntimeLabels("tm", rid, "repo-a", "h")
        key = program_key(owner) if owner else "pool"
        await backend.create(SPEC, image, labels, key)
    programs.ids.add("alive")
    manager = make_manager(backend, programs)
    await manager.start()
    assert manager.reconciled == {"adopted": 1, "reclaimed": 2}
    assert [v.runtime_id for v in manager.list_runtimes("alive")] == ["r1"]
    assert len(backend.runtimes) == 1
    await manager.close()


async def test_disk_budget_evicts_only_unneeded_images() -> None:
    backend, programs = FakeRuntimeBackend(image_bytes=100), Programs()
    programs.ids.update({"p1"})
    manager = make_manager(backend, programs, disk_budget_bytes=150)
    await manager.start()
    manager.register_spec(BUILT)
    manager.register_spec(BUILT.model_copy(update={"name": "built2"}))
    await until_async(lambda: manager.snapshot()["totals"]["image_disk_bytes"] == 200)
    await manager.acquire("p1", "built2")
    victims = await manager.enforce_disk_budget()
    assert len(victims) == 1 and manager.spec_view(manager.specs.get("built")).image_state \
        == "evicted"
    assert manager.spec_view(manager.specs.get("built2")).image_state == "ready"
    await manager.close()


async def test_metrics_and_snapshot(env: tuple[ToolManager, FakeRuntimeBackend, Programs]) -> None:
    manager, _, programs = env
    programs.ids.add("p1")
    manager.register_spec(SPEC)
    registry = CollectorRegistry()
    manager.register_metrics(registry)
    await manager.acquire("p1", "repo-a")
    await manager.measure_disk()
    text = generate_latest(registry).decode()
    assert 'thunder_tool_runtimes{state="held"} 1.0' in text
    assert 'thunder_tool_acquire_seconds_count{source="cold"} 1.0' in text
    assert 'thunder_tool_ports 1.0' in text
    snap = manager.snapshot()
    assert len(snap["programs"]["p1"]["ports"]) == 1


async def test_backend_none_answers_unavailable() -> None:
    programs = Programs()
    programs.ids.add("p1")
    manager = ToolManager(ToolManagerSettings(backend="none"), None, known_programs=programs)
    await manager.start()
    with pytest.raises(BackendUnavailable):
        manager.register_spec(SPEC)
    await manager.close()


async def test_pool_target_follows_the_queue_within_its_cap() -> None:
    backend, programs = FakeRuntimeBackend(), Programs()
    manager = make_manager(backend, programs, queue_pool_max=3, max_runtimes=10)
    await manager.start()
    try:
        manager.register_spec(SPEC.model_copy(update={"pool_size": 1}))
        entry = manager.specs.get("repo-a")
        await until_async(lambda: manager.pools.ready_count("repo-a") == 1)
        manager.on_queue_demand("repo-a", 2)
        assert manager.pool_target(entry) == 2
        await until_async(lambda: manager.pools.ready_count("repo-a") == 2)
        manager.on_queue_demand("repo-a", 50)  # capped by queue_pool_max
        assert manager.pool_target(entry) == 3
        assert manager.spec_view(entry).pool_target == 3
        await until_async(lambda: manager.pools.ready_count("repo-a") == 3)
        await until_async(lambda: manager.pools.filling("repo-a") == 0, what="refills to land")
        assert manager.pools.ready_count("repo-a") == 3  # not beyond the cap
        # admitted programs take pooled runtimes as their prepared ones
        # (the driver reports the shorter queue before each admission, as here)
        programs.ids.update({"p1", "p2"})
        manager.on_queue_demand("repo-a", 1)
        await manager.on_program_admitted("p1", "repo-a")
        manager.on_queue_demand("repo-a", 0)  # the queue drained: back to pool_size
        await manager.on_program_admitted("p2", "repo-a")
        assert manager.pool_target(entry) == 1
        view = await manager.acquire("p1", "repo-a")
        assert view.source == "prepared"
        await until_async(lambda: manager.pools.filling("repo-a") == 0, what="refills to land")
        assert backend.creates == 3  # both were served from the pool; no refill above target
        assert manager.pools.ready_count("repo-a") == 1
        manager.on_queue_demand("unknown-spec", 5)  # a spec not registered: ignored
    finally:
        await manager.close()


# -- the runtime cap, pool refills, keep-alive liveness (local-process backend) ---------------


class CountingLocalBackend(LocalProcessBackend):
    """The real local-process backend, counting runtimes that exist (created, not destroyed)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.live: set[str] = set()
        self.peak = 0

    async def create(self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels,
                     owner_key: str) -> BackendRuntime:
        runtime = await super().create(spec, image, labels, owner_key)
        self.live.add(runtime.ref)
        self.peak = max(self.peak, len(self.live))
        return runtime

    async def destroy(self, runtime: BackendRuntime) -> None:
        await super().destroy(runtime)
        self.live.discard(runtime.ref)


LOCAL = RuntimeSpec(name="local-a", image="unused")


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[ToolManager, CountingLocalBackend,
                                                        Programs]]:
    backend, programs = CountingLocalBackend(str(tmp_path / "rt")), Programs()
    settings = ToolManagerSettings(backend="local", label_prefix="tm", max_runtimes=20,
                                   pool_check_interval_s=0.2)
    manager = ToolManager(settings, backend, known_programs=programs)
    await manager.start()
    yield manager, backend, programs
    await manager.close()
    assert backend.live == set()


async def test_cap_holds_for_200_concurrent_acquires_with_a_refilling_pool(
    local: tuple[ToolManager, CountingLocalBackend, Programs],
) -> None:
    manager, backend, programs = local
    programs.ids.update(f"p{i}" for i in range(200))
    manager.register_spec(LOCAL.model_copy(update={"pool_size": 4}))
    await until_async(lambda: manager.pools.ready_count("local-a") == 4)
    results = await asyncio.gather(
        *(manager.acquire(f"p{i}", "local-a") for i in range(200)), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, BudgetExhausted) for r in refused)
    assert len(granted) == 20
    # refills that could overshoot are the ones in flight: let them land
    await until_async(lambda: manager.pools.filling("local-a") == 0, what="refills to land")
    assert backend.peak <= 20
    assert len(backend.live) <= 20


async def test_pool_refills_when_budget_evictions_are_given_back(
    local: tuple[ToolManager, CountingLocalBackend, Programs],
) -> None:
    manager, backend, programs = local
    manager.settings.max_runtimes = 4
    manager.settings.pool_check_interval_s = 3600.0  # no backstop: frees must trigger refills
    programs.ids.update({"p1", "p2", "p3", "p4"})
    manager.register_spec(LOCAL.model_copy(update={"pool_size": 4}))
    manager.register_spec(RuntimeSpec(name="local-b", image="unused"))
    await until_async(lambda: manager.pools.ready_count("local-a") == 4)
    for pid in ("p1", "p2", "p3", "p4"):  # each evicts one warm runtime of local-a
        assert (await manager.acquire(pid, "local-b")).source == "cold"
    assert manager.pools.ready_count("local-a") == 0
    for pid in ("p1", "p2", "p3", "p4"):
        await manager.on_program_ended(pid, "ok")
    await until_async(lambda: manager.pools.ready_count("local-a") == 4)
    assert len(backend.live) == 4


async def test_a_runtime_whose_keepalive_exited_is_never_handed_out(
    local: tuple[ToolManager, CountingLocalBackend, Programs], tmp_path: Path,
) -> None:
    manager, backend, programs = local
    programs.ids.add("p1")
    flag = tmp_path / "stop"
    keepalive = ["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done"]
    manager.register_spec(LOCAL.model_copy(update={"pool_size": 1, "command": keepalive}))
    await until_async(lambda: manager.pools.ready_count("local-a") == 1)
    dead = manager.pools.all_ready()[0]
    flag.touch()
    async def exited() -> bool:
        return not await backend.alive(dead.backend_runtime)

    await until_async(exited, what="the keep-alive to exit")
    flag.unlink()
    view = await manager.acquire("p1", "local-a")
    assert view.runtime_id != dead.runtime_id
    assert dead.backend_runtime.ref not in backend.live
    result = await manager.exec("p1", view.runtime_id, ExecRequest(command="echo ok"))
    assert result.stdout == "ok\n"


async def test_a_spec_whose_keepalive_exits_fails_at_acquire_and_leaves_nothing(
    env: tuple[ToolManager, FakeRuntimeBackend, Programs],
) -> None:
    manager, backend, programs = env
    programs.ids.add("p1")
    backend.exiting_keepalive.add("repo-a")
    manager.register_spec(SPEC)
    with pytest.raises(CreateFailed, match="keep-alive process of spec 'repo-a' exited"):
        await manager.acquire("p1", "repo-a")
    assert backend.runtimes == {} and manager.list_runtimes("p1") == []
    assert manager.snapshot()["totals"]["creating_runtimes"] == 0
