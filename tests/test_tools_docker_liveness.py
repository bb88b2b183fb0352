"""The tool manager on a real Docker daemon: exec children are reaped (an init is PID 1), and
a runtime whose keep-alive process exited is never handed out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from thunder_core.runtimes import ExecRequest, RuntimeSpec
from thunder_scheduler.tools.base import ExecTimeout
from thunder_scheduler.tools.docker import DockerBackend
from thunder_scheduler.tools.manager import ToolManager
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_testkit import until_async

pytestmark = pytest.mark.docker

ZOMBIES = "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l"


@pytest.fixture
async def manager(docker_host: str) -> AsyncIterator[tuple[ToolManager, DockerBackend]]:
    backend = DockerBackend(docker_host)
    settings = ToolManagerSettings(backend="docker", label_prefix=f"tz{uuid.uuid4().hex[:6]}",
                                   max_runtimes=4, pool_check_interval_s=0.2)
    manager = ToolManager(settings, backend, known_programs=lambda: {"p1"})
    await manager.start()
    yield manager, backend
    await manager.close()
    backend.close()


async def _zombies(manager: ToolManager, runtime_id: str) -> int:
    result = await manager.exec("p1", runtime_id, ExecRequest(command=ZOMBIES))
    return int(result.stdout.strip())


async def test_timed_out_execs_with_background_children_leave_no_zombies(
    manager: tuple[ToolManager, DockerBackend],
) -> None:
    tm, _backend = manager
    tm.register_spec(RuntimeSpec(name="reap", image="thunder-base:latest"))
    view = await tm.acquire("p1", "reap")
    for _ in range(3):
        with pytest.raises(ExecTimeout):
            await tm.exec("p1", view.runtime_id,
                          ExecRequest(command="sleep 300 & sleep 300", timeout_s=0.5))
    # the killed execs' children were orphaned to PID 1; an init reaps them (asynchronously)
    async def reaped() -> bool:
        return await _zombies(tm, view.runtime_id) == 0

    await until_async(reaped, timeout_s=10, interval_s=0.1, what="the orphans to be reaped")


async def test_a_pool_runtime_whose_keepalive_exited_is_replaced_at_acquire(
    manager: tuple[ToolManager, DockerBackend],
) -> None:
    tm, backend = manager
    keepalive = ["sh", "-c", "while [ ! -e /tmp/stop ]; do sleep 0.05; done"]
    tm.register_spec(RuntimeSpec(name="dies", image="thunder-base:latest", pool_size=1,
                                 command=keepalive))
    await until_async(lambda: tm.pools.ready_count("dies") == 1, timeout_s=30, interval_s=0.05,
                      what="the pool to fill")
    dead = tm.pools.all_ready()[0]
    await backend.exec(dead.backend_runtime, ["touch", "/tmp/stop"], timeout_s=30.0,
                       workdir=None, env={})
    async def exited() -> bool:
        return not await backend.alive(dead.backend_runtime)

    await until_async(exited, timeout_s=10, interval_s=0.05, what="the keep-alive to exit")
    view = await tm.acquire("p1", "dies")
    assert view.runtime_id != dead.runtime_id
    result = await tm.exec("p1", view.runtime_id, ExecRequest(command="echo alive"))
    assert (result.exit_code, result.stdout) == (0, "alive\n")
