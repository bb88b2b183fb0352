"""Lifecycle, ops and auth endpoints of the real app, in process (ASGITransport, no sockets).

The app runs with the real core (sticky policy) and no engines: lifecycle events need none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from thunder_testkit.service import engineless_app, in_process_client

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = engineless_app()
    async with in_process_client(app) as http:
        yield http


async def test_start_program_then_list_and_get(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/programs", json={
        "program_id": "p1", "framework": "langgraph", "priority": 5, "tags": {"team": "a"},
    })
    assert response.status_code == 201
    view = response.json()
    assert view["program_id"] == "p1"
    assert view["framework"] == "langgraph" and view["priority"] == 5
    assert view["tags"] == {"team": "a"}
    assert view["status"] in ("active", "paused")
    listed = (await client.get("/v1/programs")).json()["programs"]
    assert [p["program_id"] for p in listed] == ["p1"]
    assert (await client.get("/v1/programs/p1")).json()["program_id"] == "p1"


async def test_start_without_id_assigns_one(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/programs", json={})).json()["program_id"]
    second = (await client.post("/v1/programs", json={})).json()["program_id"]
    assert first != second and first.startswith("prog-")


async def test_starting_a_live_program_adopts_it_with_the_new_metadata(
    client: httpx.AsyncClient,
) -> None:
    # the adapters' start event can arrive after the first request started the program
    assert (await client.post("/v1/programs", json={"program_id": "dup"})).status_code == 201
    response = await client.post(
        "/v1/programs", json={"program_id": "dup", "framework": "langgraph", "priority": 4}
    )
    assert response.status_code == 200
    assert (response.json()["framework"], response.json()["priority"]) == ("langgraph", 4)
    listed = (await client.get("/v1/programs")).json()["programs"]
    assert [row["program_id"] for row in listed].count("dup") == 1


async def test_tool_calls_move_the_phase(client: httpx.AsyncClient) -> None:
    await client.post("/v1/programs", json={"program_id": "t"})
    started = await client.post("/v1/programs/t/tools", json={
        "call_id": "c1", "tool_name": "bash", "expected_duration_s": 3.0,
    })
    assert started.status_code == 200
    assert started.json()["phase"] == "acting"
    assert started.json()["current_tool"] == "bash"
    again = await client.post("/v1/programs/t/tools", json={"call_id": "c1", "tool_name": "bash"})
    assert again.status_code == 409
    ended = await client.post("/v1/programs/t/tools/c1/end", json={"status": "ok"})
    assert ended.status_code == 200
    assert ended.json()["phase"] == "reasoning"
    assert ended.json()["tool_calls"] == 1
    unknown_call = await client.post("/v1/programs/t/tools/nope/end", json={})
    assert unknown_call.status_code == 404
    assert "nope" in unknown_call.json()["error"]["message"]


async def test_end_program_and_release(client: httpx.AsyncClient) -> None:
    await client.post("/v1/programs", json={"program_id": "e"})
    ended = await client.post("/v1/programs/e/end", json={"status": "error", "reason": "boom"})
    assert ended.status_code == 200
    assert ended.json()["status"] == "terminated"
    assert ended.json()["end_status"] == "error"
    assert (await client.post("/v1/programs/e/end", json={})).status_code == 404
    # the ended program is still visible, and its id may start a new incarnation
    assert (await client.get("/v1/programs/e")).json()["status"] == "terminated"
    assert (await client.post("/v1/programs", json={"program_id": "e"})).status_code == 201
    released = await client.post("/programs/release", json={"program_id": "e"})
    assert released.status_code == 200
    assert released.json()["status"] == "terminated"
    active = (await client.get("/v1/programs", params={"status": "active"})).json()
    assert active["programs"] == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/programs/ghost", None),
    ("POST", "/v1/programs/ghost/tools", {"call_id": "c", "tool_name": "x"}),
    ("POST", "/v1/programs/ghost/tools/c/end", {}),
    ("POST", "/v1/programs/ghost/end", {}),
    ("POST", "/programs/release", {"program_id": "ghost"}),
])
async def test_unknown_program_is_404_with_reason(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "unknown program 'ghost'"


async def test_malformed_json_is_400_and_wrong_types_422(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = await client.post(
        "/v1/programs", content=b'{"program_id": ', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "malformed JSON body"
    wrong = await client.post("/v1/programs", json={"priority": "high"})
    assert wrong.status_code == 422
    assert "priority" in wrong.json()["error"]["message"]
    extra = await client.post("/v1/programs/x/end", json={"status": "maybe"})
    assert extra.status_code == 422
    assert "Traceback" not in caplog.text


async def test_body_over_the_limit_is_413() -> None:
    app = engineless_app(max_body_bytes=100)
    async with in_process_client(app) as http:
        response = await http.post("/v1/programs", json={"tags": {"k": "v" * 200}})
        assert response.status_code == 413
        assert "100 bytes" in response.json()["error"]["message"]
        small = await http.post("/v1/programs", json={"program_id": "ok"})
        assert small.status_code == 201


async def test_admin_key_guards_lifecycle_but_not_ops() -> None:
    app = engineless_app(admin_key="admin-secret", api_key="client-secret")
    async with in_process_client(app) as http:
        missing = await http.post("/v1/programs", json={})
        assert missing.status_code == 401
        assert "missing admin key" in missing.json()["error"]["message"]
        assert missing.headers["www-authenticate"] == 'Bearer realm="thunder"'
        wrong = await http.get("/v1/programs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid admin key"
        assert wrong.headers["www-authenticate"] == (
            'Bearer realm="thunder", error="invalid_token"'
        )
        client_key = await http.get(
            "/v1/programs", headers={"Authorization": "Bearer client-secret"}
        )
        assert client_key.status_code == 401
        assert (await http.get("/v1/programs", headers=ADMIN)).status_code == 200
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        # the OpenAI endpoints take the client key, not the admin key
        models = await http.get("/v1/models", headers=ADMIN)
        assert models.status_code == 401
        assert models.headers["www-authenticate"].startswith("Bearer ")


async def test_health_ready_and_metrics_without_backends(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert "no backend" in ready.json()["error"]["message"]
    await client.post("/v1/programs", json={"program_id": "m1"})
    await client.post("/v1/programs/m1/tools", json={"call_id": "c", "tool_name": "x"})
    text = (await client.get("/metrics")).text
    assert 'thunder_programs{phase="acting",status=' in text
    for series in ("thunder_tokens_total", "thunder_proxy_overhead_seconds_bucket",
                   "thunder_decision_seconds_count", "thunder_held_requests",
                   "thunder_pauses_total", "thunder_lease_expiries_total"):
        assert series in text, series


async def test_each_app_has_its_own_registry() -> None:
    first, second = engineless_app(), engineless_app()
    assert first.state.thunder.metrics.registry is not second.state.thunder.metrics.registry
