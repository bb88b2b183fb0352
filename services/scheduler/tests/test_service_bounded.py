"""Nothing the service keeps per program outlives the program: 10,000 programs go through
start, a request, a tool call and end on the real core, driver, gate and levers (an SGLang
engine with sessions, a llama.cpp engine with slot offload; both ``thunder_testkit`` fakes on
``httpx.MockTransport``), and afterwards every per-program structure is empty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from thunder_core.contract import RUNTIME_SPEC_TAG, ProgramEndStatus
from thunder_scheduler.app import ServiceParts, create_app
from thunder_scheduler.backends.llamacpp import LlamaCppBackend
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.gate import GateError, Usage
from thunder_scheduler.settings import load_settings
from thunder_scheduling.events import (
    ProgramEnded,
    ProgramStarted,
    RequestOutcome,
    ToolFinished,
    ToolStarted,
)
from thunder_testkit.engines import FakeLlamaServer, FakeSGLang
from thunder_testkit.polling import until_async

BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
PROGRAMS = 10_000


@asynccontextmanager
async def service(sglang: FakeSGLang, llama: FakeLlamaServer) -> AsyncIterator[ServiceParts]:
    sglang_http = httpx.AsyncClient(transport=sglang.transport())
    llama_http = httpx.AsyncClient(transport=llama.transport())
    backends = [SGLangBackend("gpu1", "http://gpu1:30000", sglang_http),
                LlamaCppBackend("cpu1", "http://cpu1:8080", llama_http)]
    settings = load_settings({"llamacpp_slot_offload": True, "prewarm_bodies_max": 64})
    app = create_app(settings, backends=backends, http=sglang_http)
    parts: ServiceParts = app.state.thunder
    async with app.router.lifespan_context(app):
        await until_async(lambda: sorted(parts.monitor.healthy_names()) == ["cpu1", "gpu1"])
        yield parts
    await sglang_http.aclose()
    await llama_http.aclose()


async def two_programs(parts: ServiceParts, i: int) -> None:
    """Programs ``i`` and ``i + 1`` side by side (so each engine gets one), each through
    start, a request, a tool call and end."""
    driver, gate = parts.driver, parts.gate
    pids = [f"p{i}", f"p{i + 1}"]
    for pid in pids:
        driver.feed(ProgramStarted(at=driver.now(), program_id=pid,
                                   tags={RUNTIME_SPEC_TAG: "repo"}))
    placed = []
    for pid in pids:
        request_id = gate.new_request_id(pid)
        placed.append((pid, request_id, await gate.acquire(pid, request_id, BODY, None)))
    for pid, request_id, placement in placed:
        gate.finish(placement, pid, request_id, RequestOutcome.OK, Usage(20, 5, 0), True)
        driver.feed(ToolStarted(at=driver.now(), program_id=pid, call_id="c1", tool_name="sh"))
    if i % 100 == 0:
        driver.note_runtime(pids[0], f"rt-{i}")
    for pid in pids:
        driver.feed(ToolFinished(at=driver.now(), program_id=pid, call_id="c1"))
        driver.feed(ProgramEnded(at=driver.now(), program_id=pid, status=ProgramEndStatus.OK))


@pytest.mark.slow
async def test_ten_thousand_programs_leave_every_map_empty() -> None:
    sglang = FakeSGLang(enable_session_radix_cache=True, max_total_num_tokens=16_384)
    llama = FakeLlamaServer()
    async with service(sglang, llama) as parts:
        for i in range(0, PROGRAMS, 2):
            await two_programs(parts, i)
        driver = parts.driver
        await until_async(lambda: driver.tracked()["background_tasks"] == 0, timeout_s=30.0)
        tracked = driver.tracked()
        assert tracked.pop("ended_runtime_ids") == PROGRAMS // 100  # bounded list of ended
        assert tracked == dict.fromkeys(tracked, 0), tracked
        assert set(tracked) >= {"programs", "last_bodies", "held_requests", "spec_queues",
                                "levers.sglang", "levers.llamacpp", "levers.vllm"}
        assert parts.gate.tracked() == 0
        assert not sglang.open_sessions  # every session opened was closed
        opened = [c for c in sglang.calls if c[1] == "/open_session"]
        erased = [c for c in llama.calls if c[1].startswith("/slots/")]
        assert opened and erased  # both engines' levers were exercised
        snapshot = driver.core.snapshot()
        assert all(row.status == "terminated" for row in snapshot.programs)
        assert len(snapshot.programs) <= 1000  # the core keeps a bounded ring of ended ones


async def test_a_request_refused_before_its_program_started_leaves_nothing() -> None:
    down = FakeSGLang(down=True)
    http = httpx.AsyncClient(transport=down.transport())
    app = create_app(load_settings({}), backends=[SGLangBackend("gpu1", "http://gpu1:1", http)],
                     http=http)
    parts: ServiceParts = app.state.thunder
    async with app.router.lifespan_context(app):
        gate = parts.gate
        for _ in range(3):
            with pytest.raises(GateError) as refused:
                await gate.acquire("p", gate.new_request_id("p"), BODY, None)
            assert refused.value.status == 503
        assert parts.driver.tracked()["programs"] == 0  # the request ids' record is gone
        assert gate.new_request_id("p") == "p:1"
    await http.aclose()
