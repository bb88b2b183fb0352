"""openhands-ai's sandbox service on the real scheduler's tool manager (local-process backend).

``ThunderSandboxService`` is driven the way openhands-ai 1.11's app server drives its
``SandboxService`` (start, get, search, pause/resume, delete) against the real scheduler service
with the tool manager on; the runtime and program are checked through the scheduler's own API
and on the backend (runtime directories). The agent server inside the sandbox is a stand-in:
``python -m http.server`` on the published agent-server port (a fake agent server, named so),
started by the spec's setup command, so the ``AGENT_SERVER`` URL is checked to answer.
Not covered: running inside openhands-ai itself (it pins openhands-sdk 1.34, our lock has 1.58).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from thunder_core import RuntimeClient, RuntimeSpec, ThunderClient
from thunder_core.client import AsyncThunderClient
from thunder_core.contract import ProgramStatus
from thunder_core.launcher import wait_http
from thunder_openhands.app_server import (
    AGENT_SERVER,
    SandboxError,
    SandboxStatus,
    ThunderSandboxService,
)
from thunder_scheduler.settings import load_settings
from thunder_testkit import until_async

ADMIN_KEY = "oh-app-admin"
SPEC = "oh-agent"
SESSION_KEY = "sk-test-session"
FAKE_AGENT_SERVER = (  # a fake agent server: a static HTTP server on the published port
    'nohup python3 -m http.server "$THUNDER_PORT_8000" --bind 127.0.0.1 >/dev/null 2>&1 &'
)


@pytest.fixture
async def sandboxes(scheduler_service: Callable[..., Any], tmp_path: Path
                    ) -> AsyncIterator[tuple[ThunderSandboxService, ThunderClient, Any, Path]]:
    root = tmp_path / "runtimes"
    running = scheduler_service(load_settings({
        "admin_key": ADMIN_KEY,
        "tools_enabled": True,
        "tools": {"backend": "local", "local_root_dir": str(root), "label_prefix": "oh"},
    }))
    admin = ThunderClient(running.url, admin_key=ADMIN_KEY, timeout_s=30.0)
    RuntimeClient(admin).register_spec(RuntimeSpec(
        name=SPEC, image="agent-server:local", ports=[8000], pool_size=1,
        env={"OH_SESSION_API_KEYS_0": SESSION_KEY}, setup_commands=[FAKE_AGENT_SERVER],
    ))
    client = AsyncThunderClient(running.url, admin_key=ADMIN_KEY, timeout_s=30.0)
    service = ThunderSandboxService(client=client, runtime_spec=SPEC, user_id="alice")
    yield service, admin, running.app.state.thunder, root
    await client.aclose()
    admin.close()


async def test_sandbox_is_a_program_holding_a_runtime(sandboxes: Any) -> None:
    service, admin, parts, root = sandboxes
    info = await service.start_sandbox(sandbox_id="conv0a1b")
    assert (info.id, info.status, info.sandbox_spec_id) == ("conv0a1b", SandboxStatus.RUNNING,
                                                            SPEC)
    assert info.created_by_user_id == "alice"
    assert info.session_api_key == SESSION_KEY
    program = admin.get_program("conv0a1b")
    assert program.status == ProgramStatus.ACTIVE and program.framework == "openhands"
    assert len(program.runtime_ids) == 1
    runtime_id = program.runtime_ids[0]
    assert runtime_id in parts.tools.runtimes
    assert (root / f"oh--{runtime_id}").is_dir()

    # the AGENT_SERVER url is the runtime's published port, and something answers there
    (url,) = info.exposed_urls
    assert (url.name, url.port) == (AGENT_SERVER, 8000)
    assert abs((datetime.now(UTC) - info.created_at).total_seconds()) < 60
    wait_http(url.url, timeout_s=10)  # the agent server is a child process of the runtime

    # get / search / batch list it; a fresh id is generated when none is given
    assert (await service.get_sandbox("conv0a1b")) == info
    second = await service.start_sandbox()
    assert second.id != info.id and len(second.id) == 32
    page = await service.search_sandboxes(limit=1)
    assert [item.id for item in page.items] == [second.id]  # newest first
    rest = await service.search_sandboxes(page_id=page.next_page_id, limit=1)
    assert [item.id for item in rest.items] == ["conv0a1b"] and rest.next_page_id is None
    batch = await service.batch_get_sandboxes(["conv0a1b", "nope"])
    assert batch[0] is not None and batch[0].id == "conv0a1b" and batch[1] is None

    # another user's service does not see alice's sandboxes
    bob = ThunderSandboxService(client=service.client, runtime_spec=SPEC, user_id="bob")
    assert (await bob.search_sandboxes()).items == []
    assert await bob.get_sandbox("conv0a1b") is None
    assert await bob.delete_sandbox("conv0a1b") is False

    # a session key shared by two sandboxes (keys are per spec) identifies none of them
    assert await service.get_sandbox_by_session_api_key(SESSION_KEY) is None

    # resume: never paused, so already running; pause: said plainly that it cannot
    assert await service.resume_sandbox("conv0a1b") is True
    with pytest.raises(NotImplementedError, match="cannot pause"):
        await service.pause_sandbox("conv0a1b")

    # delete: runtime released, program ended
    assert await service.delete_sandbox(second.id) is True
    assert await service.delete_sandbox("conv0a1b") is True
    ended = admin.get_program("conv0a1b")
    assert ended.status == ProgramStatus.TERMINATED and ended.end_status == "ok"
    await until_async(lambda: runtime_id not in parts.tools.runtimes,
                      timeout_s=10, what="the runtime to go")
    await until_async(lambda: not (root / f"oh--{runtime_id}").exists(),
                      timeout_s=10, what="its directory to go")
    assert await service.get_sandbox("conv0a1b") is None
    assert (await service.search_sandboxes()).items == []
    assert parts.tools.snapshot()["totals"]["held_runtimes"] == 0

    # one sandbox left: its key identifies it
    third = await service.start_sandbox()
    record = await service.get_sandbox_record_by_session_api_key(SESSION_KEY)
    assert record is not None and (record.id, record.created_by_user_id) == (third.id, "alice")
    assert (await service.get_sandbox_by_session_api_key(SESSION_KEY)).id == third.id
    assert await service.get_sandbox_by_session_api_key("wrong") is None
    assert await service.delete_sandbox(third.id) is True


async def test_unknown_sandbox_and_failed_start(sandboxes: Any) -> None:
    service, admin, _, _ = sandboxes
    # the interface's not-found answers: None for reads, False for actions
    assert await service.get_sandbox("missing") is None
    assert await service.resume_sandbox("missing") is False
    assert await service.pause_sandbox("missing") is False
    assert await service.delete_sandbox("missing") is False
    assert await service.get_sandbox_record_by_session_api_key(SESSION_KEY) is None

    # an unregistered spec: a clear error, and the program is ended again (nothing leaks)
    with pytest.raises(SandboxError, match="no runtime of spec 'not-registered'"):
        await service.start_sandbox(sandbox_spec_id="not-registered", sandbox_id="bad1")
    assert admin.get_program("bad1").status == ProgramStatus.TERMINATED
    assert await service.get_sandbox("bad1") is None

    # a live id cannot be started twice
    await service.start_sandbox(sandbox_id="twice")
    with pytest.raises(SandboxError, match="already exists"):
        await service.start_sandbox(sandbox_id="twice")
    assert len(admin.get_program("twice").runtime_ids) == 1  # no second runtime was taken
    assert await service.delete_sandbox("twice") is True
    with pytest.raises(ValueError, match="limit"):
        await service.search_sandboxes(limit=0)


OPENHANDS_AI_PYTHON_ENV = "THUNDER_OPENHANDS_AI_PYTHON"
INSIDE_OPENHANDS_AI = '''
import asyncio, sys
from openhands.app_server.config import config_from_env, get_sandbox_service
from openhands.app_server.sandbox.sandbox_models import SandboxInfo, SandboxStatus
from openhands.app_server.sandbox.sandbox_service import SandboxService
from openhands.app_server.services.injector import InjectorState
from openhands.app_server.user.specifiy_user_context import ADMIN, USER_CONTEXT_ATTR

config = config_from_env()  # OH_SANDBOX_KIND -> env_parser imports our injector
assert type(config.sandbox).__name__ == "ThunderSandboxServiceInjector", config.sandbox

async def main() -> None:
    state = InjectorState()
    setattr(state, USER_CONTEXT_ATTR, ADMIN)  # as openhands-ai's session_auth.py does
    async with get_sandbox_service(state) as service:
        assert isinstance(service, SandboxService)
        info = await service.start_sandbox()
        assert isinstance(info, SandboxInfo) and info.status is SandboxStatus.RUNNING, info
        running = await service.wait_for_sandbox_running(info.id, timeout=10, poll_interval=1)
        assert running.id == info.id
        assert [i.id for i in (await service.search_sandboxes()).items] == [info.id]
        assert await service.delete_sandbox(info.id) is True
        assert await service.get_sandbox(info.id) is None
        assert await service.delete_sandbox("nope") is False
    print("INSIDE-OK", info.id)

asyncio.run(main())
'''


@pytest.mark.skipif(not os.environ.get(OPENHANDS_AI_PYTHON_ENV),
                    reason=f"set {OPENHANDS_AI_PYTHON_ENV} to a python with openhands-ai 1.11 "
                    "and thunder-core/thunder-openhands (--no-deps) installed")
async def test_inside_openhands_ai_the_kind_selects_our_service(sandboxes: Any) -> None:
    """openhands-ai's own config loader and injector machinery build and use the service
    (separate interpreter: openhands-ai pins openhands-sdk 1.34, this venv has 1.58)."""
    service, admin, parts, _ = sandboxes
    env = {**os.environ, "THUNDER_SCHEDULER_URL": service.client.base_url,
           "THUNDER_ADMIN_KEY": ADMIN_KEY, "THUNDER_OH_RUNTIME_SPEC": SPEC,
           "OH_SANDBOX_KIND": "thunder_openhands.app_server.ThunderSandboxServiceInjector",
           "OPENHANDS_SUPPRESS_BANNER": "1"}
    proc = await asyncio.create_subprocess_exec(
        os.environ[OPENHANDS_AI_PYTHON_ENV], "-c", INSIDE_OPENHANDS_AI, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0 and "INSIDE-OK" in text, text[-3000:]
    sandbox_id = text.split("INSIDE-OK", 1)[1].split()[0]
    ended = admin.get_program(sandbox_id)  # the scheduler saw the program and its end
    assert ended.framework == "openhands" and ended.status == ProgramStatus.TERMINATED
    assert parts.tools.snapshot()["totals"]["held_runtimes"] == 0
