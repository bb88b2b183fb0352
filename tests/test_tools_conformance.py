"""One conformance suite for every RuntimeBackend: docker (a real dockerd), local-process, fake.

Each case gives a backend, a working spec and a spec whose build fails on that backend; every
test below must pass for all three (house style: one shared suite per pluggable interface).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from thunder_core.runtimes import RuntimeSpec
from thunder_scheduler.tools.base import (
    POOL_OWNER,
    BackendRuntime,
    BuildFailed,
    CreateFailed,
    ExecTimeout,
    ImageInfo,
    RuntimeBackend,
    RuntimeLabels,
    program_key,
)
from thunder_scheduler.tools.docker import DockerBackend
from thunder_scheduler.tools.local_process import LocalProcessBackend
from thunder_testkit.runtimes import FakeRuntimeBackend


@dataclass
class Case:
    backend: RuntimeBackend
    prefix: str
    base_spec: RuntimeSpec
    failing_build: RuntimeSpec


def _base(name: str = "conf") -> RuntimeSpec:
    return RuntimeSpec(name=name, image="thunder-base:latest", env={"FOO": "bar"},
                       workdir="/work")


@pytest.fixture(params=["fake", "local", pytest.param("docker", marks=pytest.mark.docker)])
async def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               ) -> AsyncIterator[Case]:
    prefix = f"tconf{uuid.uuid4().hex[:8]}"
    backend: RuntimeBackend
    if request.param == "fake":
        backend = FakeRuntimeBackend()
        failing = _base("broken")
        backend.fail_build.add("broken")
    elif request.param == "local":
        backend = LocalProcessBackend(str(tmp_path_factory.mktemp("local-rt")))
        failing = RuntimeSpec(name="broken", dockerfile="FROM scratch\n")
    else:
        docker_host = request.getfixturevalue("docker_host")
        backend = DockerBackend(docker_host)
        failing = RuntimeSpec(name="broken", dockerfile="FROM thunder-base:latest\nRUN exit 3\n")
    yield Case(backend, prefix, _base(), failing)
    leftovers = await backend.list_runtimes(prefix)
    for seen in leftovers:
        await backend.destroy(BackendRuntime(seen.runtime_id, seen.ref, "", {}, seen.volumes))
    assert not leftovers, f"test left runtimes behind: {leftovers}"
    if isinstance(backend, DockerBackend):
        backend.close()


async def _make(case: Case, spec: RuntimeSpec | None = None,
                owner: str = POOL_OWNER) -> tuple[BackendRuntime, RuntimeLabels, ImageInfo]:
    spec = spec or case.base_spec
    image = await case.backend.build(spec, "h" * 64, case.prefix)
    labels = RuntimeLabels(case.prefix, uuid.uuid4().hex[:16], spec.name, "h" * 64)
    return await case.backend.create(spec, image, labels, owner), labels, image


async def _sh(case: Case, runtime: BackendRuntime, script: str, timeout_s: float = 30.0,
              ) -> tuple[int, str, str]:
    out = await case.backend.exec(runtime, ["sh", "-c", script], timeout_s=timeout_s,
                                  workdir=None, env={})
    return out.exit_code, out.stdout.decode(), out.stderr.decode()


async def test_exec_reports_exit_code_stdout_and_stderr(case: Case) -> None:
    runtime, _, _ = await _make(case)
    assert await _sh(case, runtime, "echo hello") == (0, "hello\n", "")
    code, _, _ = await _sh(case, runtime, "exit 3")
    assert code == 3
    code, _, err = await _sh(case, runtime, "cat missing.txt")
    assert code != 0 and "missing.txt" in err
    await case.backend.destroy(runtime)


async def test_files_persist_within_a_runtime_and_are_isolated_between_runtimes(
    case: Case,
) -> None:
    first, _, _ = await _make(case)
    second, _, _ = await _make(case)
    assert (await _sh(case, first, "echo one > note.txt"))[0] == 0
    assert await _sh(case, first, "cat note.txt") == (0, "one\n", "")
    assert (await _sh(case, second, "cat note.txt"))[0] != 0
    await asyncio.gather(case.backend.destroy(first), case.backend.destroy(second))


async def test_workdir_and_environment_come_from_the_spec(case: Case) -> None:
    runtime, _, _ = await _make(case)
    code, out, _ = await _sh(case, runtime, "pwd")
    assert code == 0 and out.strip().endswith("/work")
    assert await _sh(case, runtime, "echo $FOO") == (0, "bar\n", "")
    out2 = await case.backend.exec(runtime, ["sh", "-c", "echo $EXTRA"], timeout_s=30,
                                   workdir=None, env={"EXTRA": "x1"})
    assert out2.stdout == b"x1\n"
    await case.backend.destroy(runtime)


async def test_exec_timeout_raises_and_the_runtime_keeps_working(case: Case) -> None:
    runtime, _, _ = await _make(case)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ExecTimeout):
        await _sh(case, runtime, "sleep 30", timeout_s=0.5)
    assert loop.time() - started < 10
    assert await _sh(case, runtime, "echo alive") == (0, "alive\n", "")
    await case.backend.destroy(runtime)


async def test_list_shows_owner_and_assign_changes_it_and_destroy_is_idempotent(
    case: Case,
) -> None:
    runtime, labels, _ = await _make(case)
    seen = {o.runtime_id: o for o in await case.backend.list_runtimes(case.prefix)}
    assert seen[labels.runtime_id].owner_key == POOL_OWNER
    assert seen[labels.runtime_id].spec_name == "conf"
    await case.backend.assign(runtime, labels, program_key("prog-1"))
    seen = {o.runtime_id: o for o in await case.backend.list_runtimes(case.prefix)}
    assert seen[labels.runtime_id].owner_key == program_key("prog-1")
    assert (await _sh(case, runtime, "echo still")) == (0, "still\n", "")
    await case.backend.destroy(runtime)
    await case.backend.destroy(runtime)
    assert await case.backend.list_runtimes(case.prefix) == []


async def test_failing_build_raises_build_failed(case: Case) -> None:
    with pytest.raises(BuildFailed):
        await case.backend.build(case.failing_build, "f" * 64, case.prefix)


async def test_failing_setup_raises_and_leaves_nothing(case: Case) -> None:
    spec = _base().model_copy(update={"setup_commands": ["echo ok > a.txt", "exit 7"]})
    with pytest.raises(CreateFailed):
        await _make(case, spec)
    assert await case.backend.list_runtimes(case.prefix) == []


async def test_ports_and_volumes_are_published_and_freed(case: Case) -> None:
    spec = _base().model_copy(update={"ports": [8000], "volumes": ["/data"]})
    runtime, labels, _ = await _make(case, spec)
    assert set(runtime.ports) == {8000} and runtime.ports[8000] > 0
    assert len(runtime.volumes) == 1
    seen = {o.runtime_id: o for o in await case.backend.list_runtimes(case.prefix)}
    assert seen[labels.runtime_id].ports == runtime.ports
    if isinstance(case.backend, DockerBackend):
        # something really listens: the daemon's port proxy, until the runtime is destroyed
        with socket.create_connection(("127.0.0.1", runtime.ports[8000]), timeout=2):
            pass
    await case.backend.destroy(runtime)
    assert await case.backend.list_runtimes(case.prefix) == []
    if isinstance(case.backend, DockerBackend):
        with pytest.raises(OSError), socket.create_connection(
            ("127.0.0.1", runtime.ports[8000]), timeout=2
        ):
            pass


async def test_many_short_concurrent_execs_all_return_their_output(case: Case) -> None:
    """Docker's attach stream sometimes drops a short exec's output (moby/moby#27289); the
    backend must still return every byte (it captures output in files)."""
    runtime, _, _ = await _make(case)
    results = await asyncio.gather(*(_sh(case, runtime, f"echo out-{i}") for i in range(60)))
    await case.backend.destroy(runtime)
    for i, result in enumerate(results):
        assert result == (0, f"out-{i}\n", ""), i
