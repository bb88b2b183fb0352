"""Lifecycle clients: paths, bodies, errors and timeouts (in-process transports)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from thunder_core import (
    AsyncThunderClient,
    ThunderAPIError,
    ThunderClient,
    ThunderUnavailable,
)

VIEW = {"program_id": "p1", "status": "active", "phase": "reasoning"}


def _transport(log: list[tuple[str, str, Any]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        log.append((request.method, request.url.path, body))
        if request.url.path == "/v1/programs/missing/end":
            return httpx.Response(404, json={"error": "unknown program 'missing'"})
        if request.url.path.endswith("/tools") or "/tools/" in request.url.path:
            return httpx.Response(204)
        if request.url.path == "/v1/programs" and request.method == "GET":
            return httpx.Response(200, json={"programs": [VIEW]})
        if request.url.path == "/programs/release":
            return httpx.Response(200, json={"released": True})
        return httpx.Response(200, json=VIEW)
    return httpx.MockTransport(handler)


def test_sync_client_sends_the_documented_paths_and_bodies() -> None:
    log: list[tuple[str, str, Any]] = []
    with ThunderClient("http://s.test/v1/", transport=_transport(log)) as client:
        assert client.base_url == "http://s.test"
        view = client.start_program("p1", framework="langgraph", tags={"a": "b"})
        assert view.program_id == "p1"
        client.start_tool("p1", "call-1", "bash", runtime_ids=["rt-1"])
        client.end_tool("p1", "call-1", status="error", error="boom")
        client.end_program("p1", status="cancelled")
        client.release("p1")
        assert [p.program_id for p in client.list_programs()] == ["p1"]
    assert log == [
        ("POST", "/v1/programs",
         {"program_id": "p1", "framework": "langgraph", "priority": 0, "tags": {"a": "b"}}),
        ("POST", "/v1/programs/p1/tools",
         {"call_id": "call-1", "tool_name": "bash", "runtime_ids": ["rt-1"]}),
        ("POST", "/v1/programs/p1/tools/call-1/end", {"status": "error", "error": "boom"}),
        ("POST", "/v1/programs/p1/end", {"status": "cancelled"}),
        ("POST", "/programs/release", {"program_id": "p1"}),
        ("GET", "/v1/programs", None),
    ]


def test_api_errors_carry_status_and_reason() -> None:
    with ThunderClient("http://s.test", transport=_transport([])) as client:
        with pytest.raises(ThunderAPIError) as info:
            client.end_program("missing")
    assert info.value.status_code == 404
    assert "unknown program" in info.value.reason


def test_unreachable_scheduler_raises_unavailable_within_the_timeout() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with ThunderClient(f"http://127.0.0.1:{port}", timeout_s=0.5) as client:
        with pytest.raises(ThunderUnavailable):
            client.start_program("p1")
    assert time.monotonic() - started < 5


def test_missing_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THUNDER_SCHEDULER_URL", raising=False)
    with pytest.raises(ValueError, match="THUNDER_SCHEDULER_URL"):
        ThunderClient()


async def test_async_client_mirrors_the_sync_one() -> None:
    log: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return _transport(log).handle_request(request)

    async with AsyncThunderClient(
        "http://s.test", transport=httpx.MockTransport(handler)
    ) as client:
        await client.start_program("p1")
        await client.start_tool("p1", "c", "search")
        await client.end_tool("p1", "c")
        await client.end_program("p1")
    assert [entry[1] for entry in log] == [
        "/v1/programs", "/v1/programs/p1/tools", "/v1/programs/p1/tools/c/end",
        "/v1/programs/p1/end",
    ]


def test_rollout_calls_send_the_documented_paths_and_bodies() -> None:
    log: list[tuple[str, str, Any]] = []
    rollout = {"rollout": "step-1", "num_programs": 8, "num_ended": 0, "draining": False,
               "cut_program_ids": [], "live_program_ids": []}

    def handler(request: httpx.Request) -> httpx.Response:
        log.append((request.method, request.url.path,
                    json.loads(request.content) if request.content else None))
        return httpx.Response(200, json=rollout)

    with ThunderClient("http://s.test", transport=httpx.MockTransport(handler)) as client:
        assert client.open_rollout("step-1", size=8).num_programs == 8
        client.open_rollout("step-1", cut_fraction=0.9)
        assert client.get_rollout("step-1").rollout == "step-1"
        assert client.cut_rollout("step-1").cut_program_ids == []
        with pytest.raises(ValueError, match="size"):
            client.open_rollout("step-1", size=0)   # refused before anything is sent
    assert log == [
        ("POST", "/v1/rollouts", {"rollout": "step-1", "size": 8}),
        ("POST", "/v1/rollouts", {"rollout": "step-1", "cut_fraction": 0.9}),
        ("GET", "/v1/rollouts/step-1", None),
        ("POST", "/v1/rollouts/step-1/cut", {}),
    ]
