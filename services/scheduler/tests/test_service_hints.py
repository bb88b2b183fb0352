"""Cache hints on the lifecycle API (``POST /v1/programs/{id}/hints``), in process.

The app runs with the real core and no engines; what the core made of a hint is read back with
the core's own checkpoint export (``thunder_scheduling.checkpoint``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from thunder_core.contract import CacheHint, HintKind, Paths, shared_prefix_id
from thunder_scheduling.checkpoint import export_program
from thunder_testkit.service import engineless_app


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    app = engineless_app()
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://thunder.test") as http:
        yield http


async def _hints(client: httpx.AsyncClient, program_id: str, *hints: Any) -> httpx.Response:
    return await client.post(Paths.HINTS.format(program_id=program_id),
                             json={"hints": list(hints)})


async def test_back_in_sets_when_the_running_tools_are_expected_to_end(
    app: FastAPI, client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/programs", json={"program_id": "p1"})
    await client.post("/v1/programs/p1/tools", json={"call_id": "c1", "tool_name": "bash"})
    response = await _hints(client, "p1", {"kind": "back_in", "seconds": 30})
    assert response.status_code == 200 and response.json()["phase"] == "acting"
    core = app.state.thunder.driver.core
    checkpoint = export_program(core, "p1")
    assert checkpoint is not None
    (call,) = checkpoint.tools
    assert call.expected_end_at == pytest.approx(call.started_at + 30)


async def test_conversation_ended_ends_the_program(client: httpx.AsyncClient) -> None:
    await client.post("/v1/programs", json={"program_id": "p2"})
    response = await _hints(
        client, "p2",
        {"kind": "shared_prefix", "prefix_id": shared_prefix_id("sys", []), "prefix_tokens": 900},
        {"kind": "conversation_ended", "reason": "user closed the chat"},
    )
    assert response.status_code == 200
    view = response.json()
    assert (view["status"], view["end_status"]) == ("terminated", "ok")


async def test_other_hints_are_accepted_and_leave_the_program_running(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/programs", json={"program_id": "p3"})
    response = await _hints(client, "p3", {"kind": "context_compacted"},
                            {"kind": "back_in", "seconds": 5})   # no tool runs: nothing to move
    assert response.status_code == 200 and response.json()["status"] != "terminated"


@pytest.mark.parametrize(("body", "reason"), [
    ({"hints": [{"kind": "back_in"}]}, "needs seconds"),
    ({"hints": [{"kind": "back_in", "seconds": -1}]}, "seconds"),
    ({"hints": [{"kind": "conversation_ended", "seconds": 3}]}, "does not take seconds"),
    ({"hints": [{"kind": "shared_prefix", "prefix_id": "not-hex"}]}, "prefix_id"),
    ({"hints": [{"kind": "warm_my_cache"}]}, "kind"),
    ({"hints": []}, "hints"),
    ({"hints": [{"kind": "back_in", "seconds": 1, "priority": 9}]}, "priority"),
    ("not json", "invalid hints"),
])
async def test_bad_hints_are_400_with_a_reason(
    client: httpx.AsyncClient, body: Any, reason: str,
) -> None:
    await client.post("/v1/programs", json={"program_id": "p4"})
    if isinstance(body, str):
        response = await client.post("/v1/programs/p4/hints", content=body)
    else:
        response = await client.post("/v1/programs/p4/hints", json=body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]
    assert (await client.get("/v1/programs/p4")).json()["status"] != "terminated"


async def test_hints_for_an_unknown_program_are_404(client: httpx.AsyncClient) -> None:
    response = await _hints(client, "nobody", {"kind": "context_compacted"})
    assert response.status_code == 404 and "nobody" in response.json()["error"]["message"]


def test_the_model_checks_the_fields_of_each_kind() -> None:
    assert CacheHint(kind=HintKind.BACK_IN, seconds=2.5).seconds == 2.5
    with pytest.raises(ValueError, match="needs prefix_id"):
        CacheHint(kind=HintKind.SHARED_PREFIX)
    # the same system prompt and tools give the same id, whatever the key order
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": 1, "b": 2}}}]
    reordered = [{"function": {"parameters": {"b": 2, "a": 1}, "name": "add"}, "type": "function"}]
    assert shared_prefix_id("sys", tools) == shared_prefix_id("sys", reordered)
    assert shared_prefix_id("sys", tools) != shared_prefix_id("other", tools)
