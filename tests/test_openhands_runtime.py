"""ThunderWorkspace end to end: a conversation's sandbox from the real scheduler's tool manager.

* local-process backend: the SDK's own terminal tool (subprocess mode) works in the runtime's
  directory; closing the conversation gives the runtime back and ends the program;
* Docker backend (``docker`` marker, the private daemon of scripts/setup_docker.sh): a warm
  pooled container is handed over, ``Tool(name="thunder_terminal")`` runs the agent's commands
  in it through the exec API (``cd`` carries over), and after ``close()`` no container of the
  conversation is left.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openhands.sdk import LLM, Agent, Conversation, Tool
from openhands.sdk.event import ObservationEvent
from openhands.tools.terminal import TerminalTool  # noqa: F401  (registers "terminal")

import thunder_openhands
import thunder_openhands.runtime_terminal
from thunder_core.client import ThunderClient
from thunder_core.launcher import wait_http
from thunder_core.runtimes import RuntimeClient, RuntimeSpec
from thunder_openhands import ThunderWorkspace
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import RunningService, start_service_thread


@pytest.fixture
def start_stack(scripted_openai: ScriptedOpenAI) -> Iterator[Callable[..., RunningService]]:
    services: list[RunningService] = []

    def start(**tools: Any) -> RunningService:
        settings = load_settings({"backends": [f"sglang={scripted_openai.url}"],
                                  "tools_enabled": True, "tools": tools})
        service = start_service_thread(settings)
        services.append(service)
        wait_http(f"{service.url}/ready", timeout_s=20)
        thunder_openhands.enable(service.url)
        return service

    try:
        yield start
    finally:
        thunder_openhands.disable()
        for service in services:
            service.stop()


def _register(url: str, spec: RuntimeSpec) -> RuntimeClient:
    runtimes = RuntimeClient(ThunderClient(url, timeout_s=30))
    runtimes.register_spec(spec)
    until(lambda: runtimes.get_spec(spec.name).pool_ready >= spec.pool_size,
          timeout_s=60, what="warm pool")
    return runtimes


def _run(fake: ScriptedOpenAI, tool: str, commands: list[str], workspace: ThunderWorkspace
         ) -> tuple[Any, list[str]]:
    fake.script = [[FakeToolCall("terminal", {"command": c})] for c in commands] + ["done"]
    seen: list[str] = []
    llm = LLM(model="openai/scripted", base_url=f"{fake.url}/v1", api_key="unused",
              usage_id="agent", num_retries=0)
    params = {"terminal_type": "subprocess"} if tool == "terminal" else {}
    conversation = Conversation(
        agent=Agent(llm=llm, tools=[Tool(name=tool, params=params)]), workspace=workspace,
        visualizer=None,
        callbacks=[lambda e: seen.append(e.observation.text)
                   if isinstance(e, ObservationEvent) else None],
    )
    assert str(conversation.id) == workspace.program_id
    conversation.send_message("work in the sandbox")
    conversation.run()
    return conversation, seen


def test_local_runtime_serves_the_sdk_terminal_and_is_given_back(
    start_stack: Callable[..., RunningService], scripted_openai: ScriptedOpenAI, tmp_path: Path
) -> None:
    service = start_stack(backend="local", local_root_dir=str(tmp_path / "rt"))
    runtimes = _register(service.url, RuntimeSpec(name="oh-local", image="unused",
                                                  pool_size=1, env={"SANDBOX": "yes"}))
    workspace = ThunderWorkspace.acquire("oh-local")
    assert workspace.runtime is not None and workspace.runtime.source in ("pool", "prepared")
    assert Path(workspace.working_dir).is_relative_to(tmp_path / "rt")
    conversation, seen = _run(scripted_openai, "terminal",
                              ["echo made-by-agent > out.txt && pwd"], workspace)
    assert (Path(workspace.working_dir) / "out.txt").read_text() == "made-by-agent\n"
    assert seen and workspace.working_dir in seen[0]
    # execute_command runs in the runtime (the spec's env, the runtime's own path)
    result = workspace.execute_command("echo $SANDBOX; cat out.txt")
    assert result.exit_code == 0 and result.stdout.split() == ["yes", "made-by-agent"]

    conversation.close()
    assert workspace.released
    row = httpx.get(f"{service.url}/v1/programs/{workspace.program_id}").json()
    until(lambda: httpx.get(f"{service.url}/v1/programs/{workspace.program_id}").json()
          ["status"] == "terminated", timeout_s=10, what="program end")
    row = httpx.get(f"{service.url}/v1/programs/{workspace.program_id}").json()
    assert row["end_status"] == "ok" and row["framework"] == "openhands"
    assert row["tool_calls"] == 1 and row["requests"] == 2
    until(lambda: not Path(workspace.working_dir).exists(),
          timeout_s=10, what="runtime directory removal")
    assert runtimes.get_spec("oh-local").live_runtimes == 0


@pytest.mark.docker
def test_docker_runtime_from_the_warm_pool_runs_the_terminal_via_exec(
    start_stack: Callable[..., RunningService], scripted_openai: ScriptedOpenAI, docker_host: str
) -> None:
    import docker

    service = start_stack(backend="docker", docker_host=docker_host,
                          label_prefix="thunderoh")
    runtimes = _register(service.url, RuntimeSpec(name="oh-docker", image="thunder-base:latest",
                                                  pool_size=1))
    workspace = ThunderWorkspace.acquire("oh-docker")
    assert workspace.runtime is not None and workspace.runtime.source in ("pool", "prepared")
    assert workspace.runtime_backend == "docker"
    conversation, seen = _run(
        scripted_openai, "thunder_terminal",
        ["mkdir -p /work/sub && cd /work/sub && echo inside > f.txt", "pwd; cat f.txt; hostname"],
        workspace,
    )
    assert len(seen) == 2
    lines = seen[1].split()
    assert lines[:2] == ["/work/sub", "inside"]           # cwd carried over between calls
    container_id = workspace.runtime.container_id
    assert container_id.startswith(lines[2])              # it ran in the pooled container
    upload = Path(workspace.working_dir) / "up.bin"
    upload.write_bytes(bytes(range(256)) * 500)
    assert workspace.file_upload(upload, "/work/up.bin").success
    down = Path(workspace.working_dir) / "down.bin"
    assert workspace.file_download("/work/up.bin", down).success
    assert down.read_bytes() == upload.read_bytes()

    conversation.close()
    client = docker.DockerClient(base_url=docker_host)
    try:
        until(lambda: not client.containers.list(all=True, filters={"id": container_id}),
              timeout_s=30, what="the conversation's container to be removed")
    finally:
        client.close()
    row = httpx.get(f"{service.url}/v1/programs/{workspace.program_id}").json()
    assert row["status"] == "terminated" and row["end_status"] == "ok"
    assert runtimes.get_spec("oh-docker").live_runtimes == 0
