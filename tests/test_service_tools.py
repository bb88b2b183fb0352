"""The tool manager inside the real scheduler service (local-process runtimes, no mocks).

A program acquires a runtime through ``thunder_core.RuntimeClient``, runs commands in it, and
the runtime is gone once the program ends: by an explicit end, by ThunderAgent's release, or
by its lease expiring (the service runs on a ``ManualClock`` that the test moves past the
lease; the backstop tick then expires it). Runtimes are checked on the backend itself (its
runtime directories and processes), not only in the API's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thunder_core import RuntimeClient, RuntimeSpec, ThunderAPIError, ThunderClient
from thunder_core.contract import ProgramStatus
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.settings import load_settings
from thunder_testkit import until

ADMIN_KEY = "tools-admin"


def _runtime_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir()] if root.exists() else []


def _start(scheduler_service: Callable[..., Any], root: Path, **fields: Any) -> Any:
    settings = load_settings({
        "admin_key": ADMIN_KEY,
        "tools_enabled": True,
        "tools": {"backend": "local", "local_root_dir": str(root), "label_prefix": "svc"},
        **fields,
    })
    clock = ManualClock(start=1000.0)
    running = scheduler_service(settings, clock=clock)
    client = ThunderClient(running.url, admin_key=ADMIN_KEY, timeout_s=30.0)
    runtimes = RuntimeClient(client, acquire_timeout_s=60.0)
    runtimes.register_spec(RuntimeSpec(name="repo", image="thunder-base:latest", pool_size=1))
    return running, client, runtimes, clock


@pytest.fixture
def service(scheduler_service: Callable[..., Any], tmp_path: Path) -> Any:
    root = tmp_path / "runtimes"
    running, client, runtimes, clock = _start(scheduler_service, root)
    yield running, client, runtimes, clock, root
    client.close()


def test_runtime_lives_with_its_program_and_goes_with_every_end(service: Any) -> None:
    running, client, runtimes, clock, root = service
    for pid in ("ends", "released", "expires"):
        client.start_program(pid, tags={"runtime_spec": "repo"})
    held: dict[str, str] = {}
    for pid in held.keys() | {"ends", "released", "expires"}:
        view = runtimes.acquire(pid, "repo")
        held[pid] = view.runtime_id
        result = runtimes.exec(pid, view.runtime_id, "echo $((6 * 7)) > out && cat out")
        assert (result.exit_code, result.stdout.strip()) == (0, "42")
        client.start_tool(pid, f"{pid}-c1", "bash", runtime_ids=[view.runtime_id])
        assert client.get_program(pid).runtime_ids == [view.runtime_id]
    assert len(set(held.values())) == 3
    parts = running.app.state.thunder
    assert parts.tools.snapshot()["totals"]["held_runtimes"] == 3

    # 1. explicit end
    client.end_program("ends", status="error", reason="agent crashed")
    until(lambda: held["ends"] not in parts.tools.runtimes,
          timeout_s=10, what="end to tear down the runtime")
    with pytest.raises(ThunderAPIError) as caught:
        runtimes.exec("ends", held["ends"], "true")
    assert caught.value.status_code == 404
    with pytest.raises(ThunderAPIError) as late:
        runtimes.acquire("ends", "repo")
    assert late.value.status_code == 409  # an ended program gets no new runtime
    assert client.get_program("ends").runtime_ids == [held["ends"]]  # still shown after end

    # 2. ThunderAgent's release
    client.release("released")
    until(lambda: held["released"] not in parts.tools.runtimes,
          timeout_s=10, what="release to tear down")

    # 3. lease expiry: nothing happens until the (modelled) lease has passed; the test runs the
    # driver's tick itself, on the service's loop, at each modelled time
    clock.advance(1799.0)  # the core's default lease is 30 minutes
    running.call(parts.driver.tick)
    assert client.get_program("expires").status != ProgramStatus.TERMINATED
    assert held["expires"] in parts.tools.runtimes
    clock.advance(2.0)
    running.call(parts.driver.tick)
    assert client.get_program("expires").status == ProgramStatus.TERMINATED
    until(lambda: held["expires"] not in parts.tools.runtimes,
          timeout_s=10, what="lease expiry teardown")
    assert client.get_program("expires").end_status is not None

    # nothing of the programs is left on the backend: only warm pool runtimes (the three
    # queued programs raised the pool target to 3; it is not shrunk actively)
    names = {f"svc--{runtime_id}" for runtime_id in held.values()}
    until(lambda: not names & {p.name for p in _runtime_dirs(root)}, timeout_s=10,
          what="the programs' runtime directories to be removed")
    until(lambda: parts.tools.pools.filling("repo") == 0, timeout_s=20, what="pool refills to land")
    pooled = {f"svc--{r.runtime_id}" for r in parts.tools.pools.all_ready()}
    assert {p.name for p in _runtime_dirs(root)} == pooled
    assert parts.tools.snapshot()["totals"]["held_runtimes"] == 0


def test_tool_metrics_and_auth_are_wired(service: Any) -> None:
    import httpx

    running, client, runtimes, _, _ = service
    text = httpx.get(f"{running.url}/metrics").text
    assert "thunder_tool" in text  # the manager's series are on the app's registry
    no_key = httpx.post(f"{running.url}/v1/programs/p/runtimes", json={"spec": "repo"})
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    exec_no_key = httpx.post(f"{running.url}/v1/programs/p/runtimes/x/exec",
                             json={"command": "id"})
    assert exec_no_key.status_code == 401
    del client, runtimes


def test_queued_programs_raise_the_pool_and_admission_prepares(
    scheduler_service: Callable[..., Any], scripted_openai: Any, tmp_path: Path
) -> None:
    import httpx

    running, client, runtimes, _ = _start(
        scheduler_service, tmp_path / "runtimes",
        backends=[f"llm@sglang={scripted_openai.url}"],
    )
    parts = running.app.state.thunder
    until(lambda: parts.monitor.healthy_names() == ["llm"],
          timeout_s=10, what="the engine to be probed")
    for i in range(3):
        client.start_program(f"q{i}", tags={"runtime_spec": "repo"})
    assert parts.driver.queued_programs("repo") == 3
    assert runtimes.get_spec("repo").pool_target == 3  # raised from pool_size 1 to the queue
    until(lambda: runtimes.get_spec("repo").pool_ready == 3,
          timeout_s=20, what="the pool to follow the queue")

    # q0's first LLM request is admitted: its runtime is prepared before its first tool call
    answer = httpx.post(
        f"{running.url}/v1/chat/completions",
        headers={"X-Thunder-Program-Id": "q0"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "go"}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert parts.driver.queued_programs("repo") == 2
    until(lambda: "q0" in parts.tools.snapshot()["programs"],
          timeout_s=10, what="preparation at admission")
    view = runtimes.acquire("q0", "repo")
    assert view.source == "prepared"
    assert client.get_program("q0").runtime_ids == [view.runtime_id]
    client.close()
