"""Churn and restart tests of the tool manager against the real backends (dockerd, local).

Churn: 200 programs acquire a runtime (half prepared at admission, the rest from the warm pool
or cold), write files, and end (normally, by crash, by lease expiry, or after releasing); at the
end nothing is held: no runtimes, volumes, ports, and runtime disk is back to its baseline.
Restart: a manager in a subprocess is SIGKILLed with live runtimes; a new one reclaims them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
import uuid
from pathlib import Path

import docker
import pytest

from thunder_core.launcher import ChildProcess
from thunder_core.runtimes import ExecRequest, RuntimeSpec
from thunder_scheduler.tools.base import RuntimeBackend
from thunder_scheduler.tools.docker import DockerBackend
from thunder_scheduler.tools.local_process import MARK_ENV, LocalProcessBackend
from thunder_scheduler.tools.manager import ToolManager
from thunder_scheduler.tools.settings import ToolManagerSettings

PROGRAMS = 200
CONCURRENCY = 16
END_REASONS = ("ok", "error", "cancelled", "lease_expired")


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeBackend:
    if kind == "docker":
        return DockerBackend(request.getfixturevalue("docker_host"))
    return LocalProcessBackend(str(tmp_path / "rt"))


def _docker_usage(docker_host: str, prefix: str) -> tuple[int, int, int]:
    """(containers, volumes, writable-layer bytes) carrying ``prefix`` labels."""
    api = docker.APIClient(base_url=docker_host, version="1.41")
    try:
        label = {"label": f"{prefix}.managed=true"}
        rows = api.containers(all=True, size=True, filters=label)
        volumes = (api.volumes(filters=label) or {}).get("Volumes") or []
        return len(rows), len(volumes), sum(int(r.get("SizeRw") or 0) for r in rows)
    finally:
        api.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", pytest.param("docker", marks=pytest.mark.docker)])
async def test_churn_leaves_nothing_behind(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prefix = f"tchurn{uuid.uuid4().hex[:6]}"
    backend = _backend(kind, request, tmp_path)
    known: set[str] = set()
    settings = ToolManagerSettings(backend="none", label_prefix=prefix, max_runtimes=48,
                                   docker_concurrency=8)
    manager = ToolManager(settings, backend, known_programs=lambda: set(known))
    await manager.start()
    baseline = await backend.list_runtimes(prefix)
    assert baseline == []
    manager.register_spec(RuntimeSpec(
        name="churn", image="thunder-base:latest", ports=[8000], volumes=["/data"],
        pool_size=4,
    ))
    ports_seen: set[int] = set()
    peak_disk_bytes = 0
    # the local backend keeps spec paths under the runtime's root/: /data is ../data from /work
    data_dir = "/data" if kind == "docker" else "../data"
    slots = asyncio.Semaphore(CONCURRENCY)

    async def program(i: int) -> None:
        nonlocal peak_disk_bytes
        pid = f"churn-{i}"
        async with slots:
            known.add(pid)
            if i % 2 == 0:
                await manager.on_program_admitted(pid, "churn")
            view = await manager.acquire(pid, "churn")
            ports_seen.update(view.ports.values())
            write = ExecRequest(command="dd if=/dev/zero of=blob bs=1024 count=64 2>/dev/null;"
                                f" echo x > {data_dir}/v.txt; cat {data_dir}/v.txt")
            result = await manager.exec(pid, view.runtime_id, write)
            assert (result.exit_code, result.stdout) == (0, "x\n")
            if i % 25 == 0:
                await manager.measure_disk()
                peak_disk_bytes = max(peak_disk_bytes,
                                      manager.snapshot()["totals"]["runtime_disk_bytes"])
            if i % 5 == 4:
                await manager.release(pid, view.runtime_id)
            await manager.on_program_ended(pid, END_REASONS[i % len(END_REASONS)])
            known.discard(pid)

    await asyncio.gather(*(program(i) for i in range(PROGRAMS)))
    assert peak_disk_bytes >= 64 * 1024  # the accounting saw the files being written
    snap = manager.snapshot()
    assert snap["programs"] == {} and snap["totals"]["held_runtimes"] == 0
    await manager.close()
    assert await backend.list_runtimes(prefix) == []
    if isinstance(backend, DockerBackend):
        assert _docker_usage(backend.docker_host, prefix) == (0, 0, 0)
        for port in ports_seen:
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                pass
        backend.close()
    else:
        assert list((tmp_path / "rt").iterdir()) == []


def _marked_processes(prefix: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"{MARK_ENV}={prefix}--".encode() in environ:
            found.append(pid)
    return found


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from thunder_core.runtimes import ExecRequest, RuntimeSpec
    from thunder_scheduler.tools.docker import DockerBackend
    from thunder_scheduler.tools.local_process import MARK_ENV, LocalProcessBackend
    from thunder_scheduler.tools.manager import ToolManager
    from thunder_scheduler.tools.settings import ToolManagerSettings

    kind, target, prefix = sys.argv[1:4]
    async def main():
        backend = DockerBackend(target) if kind == "docker" else LocalProcessBackend(target)
        programs = {"p0", "p1", "p2"}
        manager = ToolManager(ToolManagerSettings(backend="none", label_prefix=prefix),
                              backend, known_programs=lambda: programs)
        await manager.start()
        manager.register_spec(RuntimeSpec(name="r", image="thunder-base:latest", pool_size=2,
                                          volumes=["/data"]))
        for pid in sorted(programs):
            view = await manager.acquire(pid, "r")
            await manager.exec(pid, view.runtime_id,
                               ExecRequest(command="sleep 1000 >/dev/null 2>&1 &"))
        while manager.pools.ready_count("r") < 2:
            await asyncio.sleep(0.05)
        print("READY", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["local", pytest.param("docker", marks=pytest.mark.docker)])
async def test_restart_after_sigkill_reclaims_everything(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prefix = f"trestart{uuid.uuid4().hex[:6]}"
    backend = _backend(kind, request, tmp_path)
    target = backend.docker_host if isinstance(backend, DockerBackend) else str(tmp_path / "rt")
    child = ChildProcess([sys.executable, "-c", CHILD, kind, target, prefix],
                         name="tool manager", ready=r"^READY$")
    try:
        await asyncio.to_thread(child.wait_ready, 120)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.stop()
    live = await backend.list_runtimes(prefix)
    assert len(live) == 5  # 3 held + 2 pooled, orphaned by the SIGKILL
    known = {"p1"}  # the scheduler still knows one program: its runtime is adopted
    manager = ToolManager(ToolManagerSettings(backend="none", label_prefix=prefix), backend,
                          known_programs=lambda: known)
    await manager.start()
    assert manager.reconciled == {"adopted": 1, "reclaimed": 4}
    (adopted,) = manager.list_runtimes("p1")
    result = await manager.exec("p1", adopted.runtime_id, ExecRequest(command="echo back"))
    assert result.stdout == "back\n"
    await manager.on_program_ended("p1", "ok")
    await manager.close()
    assert await backend.list_runtimes(prefix) == []
    if isinstance(backend, DockerBackend):
        assert _docker_usage(backend.docker_host, prefix) == (0, 0, 0)
        backend.close()
    else:
        # the detached `sleep 1000`s the SIGKILLed manager started are gone too
        assert await asyncio.to_thread(_marked_processes, prefix) == []
