"""The runtime HTTP API (router mounted on a small FastAPI app) through the thunder-core client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from thunder_core.client import AsyncThunderClient, ThunderAPIError
from thunder_core.contract import Paths
from thunder_core.runtimes import AsyncRuntimeClient, RuntimeSpec
from thunder_scheduler.tools.api import create_tools_router
from thunder_scheduler.tools.manager import ToolManager
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_testkit.runtimes import FakeRuntimeBackend

ADMIN = "Bearer admin-key"


def require_admin(authorization: str | None = Header(default=None)) -> None:
    if authorization != ADMIN:
        raise HTTPException(status_code=401, detail="admin key required")


@pytest.fixture
async def api() -> AsyncIterator[tuple[AsyncRuntimeClient, httpx.AsyncClient, FakeRuntimeBackend]]:
    backend = FakeRuntimeBackend()
    programs = {"p1"}
    acquired: list[str] = []
    manager = ToolManager(
        ToolManagerSettings(backend="none", label_prefix="tapi"), backend,
        known_programs=lambda: set(programs),
        on_runtime_acquired=lambda pid, view: acquired.append(view.runtime_id),
    )
    await manager.start()
    app = FastAPI()
    app.include_router(create_tools_router(lambda: manager, require_admin))
    transport = httpx.ASGITransport(app=app)
    client = AsyncThunderClient("http://tools.test", admin_key="admin-key", transport=transport)
    raw = httpx.AsyncClient(transport=transport, base_url="http://tools.test")
    yield AsyncRuntimeClient(client), raw, backend
    await raw.aclose()
    await client.aclose()
    await manager.close()
    assert backend.runtimes == {}


async def test_register_acquire_exec_release_roundtrip(
    api: tuple[AsyncRuntimeClient, httpx.AsyncClient, FakeRuntimeBackend],
) -> None:
    runtimes, _, backend = api
    view = await runtimes.register_spec(RuntimeSpec(name="repo", image="img", ports=[80]))
    assert view.spec.name == "repo"
    assert [s.spec.name for s in await runtimes.list_specs()] == ["repo"]
    runtime = await runtimes.acquire("p1", "repo")
    assert runtime.container_id in backend.runtimes and set(runtime.ports) == {"80"}
    result = await runtimes.exec("p1", runtime.runtime_id, "echo hi; exit 2")
    assert (result.exit_code, result.stdout) == (2, "hi\n")
    assert [r.runtime_id for r in await runtimes.list_runtimes("p1")] == [runtime.runtime_id]
    await runtimes.release("p1", runtime.runtime_id)
    assert backend.runtimes == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", Paths.RUNTIMES.format(program_id="p1"), {"spec": "missing"}, 404),
        ("POST", Paths.RUNTIMES.format(program_id="ghost"), {"spec": "repo"}, 404),
        ("POST", Paths.RUNTIMES.format(program_id="p1"), {"specs": "repo"}, 422),
        ("POST", Paths.RUNTIME_EXEC.format(program_id="p1", runtime_id="nope"),
         {"command": "true"}, 404),
        ("POST", Paths.RUNTIME_EXEC.format(program_id="p1", runtime_id="nope"),
         {"command": ""}, 422),
        ("DELETE", Paths.RUNTIME.format(program_id="p1", runtime_id="nope"), None, 404),
        ("GET", Paths.RUNTIME_SPECS + "/missing", None, 404),
        ("POST", Paths.RUNTIME_SPECS, {"name": "Bad Name", "image": "x"}, 422),
        ("POST", Paths.RUNTIME_SPECS, {"name": "noimage"}, 422),
    ],
)
async def test_bad_requests_get_json_errors(
    api: tuple[AsyncRuntimeClient, httpx.AsyncClient, FakeRuntimeBackend],
    method: str, path: str, body: object, status: int,
) -> None:
    runtimes, raw, _ = api
    await runtimes.register_spec(RuntimeSpec(name="repo", image="img"))
    response = await raw.request(method, path, json=body,
                                 headers={"Authorization": ADMIN})
    assert response.status_code == status
    assert "error" in response.json()


async def test_non_json_body_is_400_and_admin_is_required(
    api: tuple[AsyncRuntimeClient, httpx.AsyncClient, FakeRuntimeBackend],
) -> None:
    _, raw, _ = api
    response = await raw.post(Paths.RUNTIMES.format(program_id="p1"), content=b"{nope")
    assert response.status_code == 400 and response.json()["error"]["message"] == "body is not JSON"
    response = await raw.post(Paths.RUNTIME_SPECS, json={"name": "x", "image": "i"})
    assert response.status_code == 401


async def test_faults_map_to_status_codes(
    api: tuple[AsyncRuntimeClient, httpx.AsyncClient, FakeRuntimeBackend],
) -> None:
    runtimes, _, backend = api
    await runtimes.register_spec(RuntimeSpec(name="repo", image="img"))
    runtime = await runtimes.acquire("p1", "repo")
    with pytest.raises(ThunderAPIError) as timeout:
        await runtimes.exec("p1", runtime.runtime_id, "sleep 2", timeout_s=0.05)
    assert timeout.value.status_code == 504
    backend.fail_build.add("broken")
    await runtimes.register_spec(RuntimeSpec(name="broken", image="img"))
    with pytest.raises(ThunderAPIError) as failed:
        await runtimes.acquire("p1", "broken")
    assert failed.value.status_code == 409 and "fault injected" in failed.value.reason
    backend.down = True
    with pytest.raises(ThunderAPIError) as down:
        await runtimes.exec("p1", runtime.runtime_id, "echo hi")
    assert down.value.status_code == 503
    backend.down = False
    assert [r.runtime_id for r in await runtimes.list_runtimes("p1")] == [runtime.runtime_id]
