"""Engine levers through the real app: SGLang sessions and priority, upstream failure reports,
and the prompt fingerprint the cache_aware baseline reads.

The engine is ``thunder_testkit.engines.FakeSGLang`` (a fake control plane on
``httpx.MockTransport``: it records ``/open_session`` / ``/close_session`` and serves no
completions), so the tests drive the service's gate the way the proxy does (``acquire`` ->
decorate -> ``finish``) and end programs through the real lifecycle API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from thunder_scheduler.app import ServiceParts, create_app
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.gate import Usage
from thunder_scheduler.request_body import PROMPT_BLOCK_TOKENS, prompt_blocks
from thunder_scheduler.settings import load_settings
from thunder_scheduling.events import Event, RequestArrived, RequestOutcome
from thunder_testkit import until_async
from thunder_testkit.engines import FakeSGLang
from thunder_testkit.service import in_process_client

BODY: dict[str, Any] = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def service(
    fake: FakeSGLang, **fields: Any
) -> AsyncIterator[tuple[ServiceParts, httpx.AsyncClient]]:
    http = httpx.AsyncClient(transport=fake.transport())
    backend = SGLangBackend("gpu1", "http://gpu1:30000", http)
    app: FastAPI = create_app(load_settings(fields), backends=[backend], http=http)
    parts: ServiceParts = app.state.thunder
    async with in_process_client(app) as client:
        await until_async(lambda: parts.monitor.healthy_names() == ["gpu1"])
        yield parts, client
    await http.aclose()


async def turn(parts: ServiceParts, program_id: str, body: dict[str, Any] = BODY) -> Any:
    """One request the way the proxy runs it: acquire, decorate, finish."""
    gate = parts.gate
    request_id = gate.new_request_id(program_id)
    placement = await gate.acquire(program_id, request_id, body, None)
    sent = placement.backend.decorate("/v1/chat/completions", dict(body), placement.hints)
    gate.finish(placement, program_id, request_id, RequestOutcome.OK, Usage(20, 5, 0), False)
    return sent


async def test_one_sglang_session_per_program_closed_at_program_end() -> None:
    fake = FakeSGLang(enable_session_radix_cache=True)
    async with service(fake) as (parts, client):
        first, second = await asyncio.gather(turn(parts, "p1"), turn(parts, "p1"))
        third = await turn(parts, "p1")
        session = first["session_id"]
        assert session == second["session_id"] == third["session_id"]
        assert fake.open_sessions == {session}
        opens = [call for call in fake.calls if call[1] == "/open_session"]
        assert len(opens) == 1  # concurrent first requests share one open
        other = await turn(parts, "p2")
        assert other["session_id"] != session and len(fake.open_sessions) == 2

        ended = await client.post("/v1/programs/p1/end", json={"status": "ok"})
        assert ended.status_code == 200
        await until_async(lambda: session not in fake.open_sessions)
        assert fake.open_sessions == {other["session_id"]}


async def test_without_session_radix_cache_no_session_is_opened() -> None:
    fake = FakeSGLang()
    async with service(fake) as (parts, _):
        sent = await turn(parts, "p1")
        assert "session_id" not in sent
        assert not any(call[1] == "/open_session" for call in fake.calls)


async def test_a_refused_session_is_counted_and_the_request_still_runs() -> None:
    fake = FakeSGLang(enable_session_radix_cache=True, status_overrides={"/open_session": 400})
    async with service(fake) as (parts, _):
        sent = await turn(parts, "p1")
        again = await turn(parts, "p1")
        assert "session_id" not in sent and "session_id" not in again
        opens = [call for call in fake.calls if call[1] == "/open_session"]
        assert len(opens) == 1  # not retried on every request
        failures = parts.metrics.registry.get_sample_value(
            "thunder_engine_lever_failures_total", {"lever": "session_open"}
        )
        assert failures == 1


async def test_a_refusal_is_forgotten_when_the_program_ends() -> None:
    fake = FakeSGLang(enable_session_radix_cache=True, status_overrides={"/open_session": 400})
    async with service(fake) as (parts, client):
        assert "session_id" not in await turn(parts, "p1")
        assert (await client.post("/v1/programs/p1/end", json={"status": "ok"})).status_code == 200
        fake.status_overrides.clear()  # the engine takes sessions now
        again = await turn(parts, "p1")  # the same id, a new program: it may try again
        assert again["session_id"] in fake.open_sessions


@pytest.mark.parametrize("low_first", [False, True])
async def test_engine_priority_reaches_the_body_in_the_engines_order(low_first: bool) -> None:
    fake = FakeSGLang(enable_priority_scheduling=True, schedule_low_priority_values_first=low_first)
    async with service(fake) as (parts, client):
        started = await client.post("/v1/programs", json={"program_id": "p1", "priority": 7})
        assert started.status_code == 201
        sent = await turn(parts, "p1")
        assert sent["priority"] == (-7 if low_first else 7)


async def test_upstream_failures_mark_the_backend_unhealthy() -> None:
    fake = FakeSGLang()
    async with service(fake, monitor_interval_s=3600.0) as (parts, client):
        for _ in range(3):  # monitor_unhealthy_after_failures defaults to 3
            parts.gate.report_upstream_failure("gpu1", "connection refused")
        await until_async(lambda: parts.monitor.healthy_names() == [])
        assert parts.monitor.state("gpu1").last_error == "connection refused"
        assert (await client.get("/ready")).status_code == 503
        count = parts.metrics.registry.get_sample_value(
            "thunder_upstream_failures_total", {"backend": "gpu1"}
        )
        assert count == 3
        parts.gate.report_upstream_failure("no-such-backend", "x")  # ignored, no crash


async def test_cache_aware_policy_gets_the_prompt_fingerprint() -> None:
    fake = FakeSGLang()
    seen: list[Event] = []
    async with service(fake, policy="cache_aware") as (parts, _):
        feed = parts.driver.feed

        def recording(event: Event) -> Any:
            seen.append(event)
            return feed(event)

        parts.driver.feed = recording  # type: ignore[method-assign]
        trace_body = {**BODY, "thunder_trace": {"hash_ids": [1, 2, 3], "session": "t1"}}
        await turn(parts, "p1", trace_body)
        await turn(parts, "p2", BODY)
    arrived = [e for e in seen if isinstance(e, RequestArrived)]
    assert arrived[0].prompt_blocks == prompt_blocks(trace_body, PROMPT_BLOCK_TOKENS)
    assert len(arrived[0].prompt_blocks) == 3
    assert arrived[1].prompt_blocks == prompt_blocks(BODY, PROMPT_BLOCK_TOKENS)
    assert len(arrived[1].prompt_blocks) == 1


async def test_other_policies_do_not_pay_for_the_fingerprint() -> None:
    fake = FakeSGLang()
    seen: list[Event] = []
    async with service(fake) as (parts, _):  # thunder (default)
        feed = parts.driver.feed
        parts.driver.feed = lambda e: (seen.append(e), feed(e))[1]  # type: ignore[method-assign]
        await turn(parts, "p1")
    assert [e.prompt_blocks for e in seen if isinstance(e, RequestArrived)] == [()]
