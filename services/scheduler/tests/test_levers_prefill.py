"""Prefill-only requests (``levers/prefill.py``) and the ``Prewarm`` lever that sends them:
the body asks for one token, unstreamed, and reaches the engine decorated like a forwarded
request, through the driver's injected client (an ``httpx.MockTransport`` engine here)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from thunder_core.contract import EnginePaths
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.levers.prefill import prefill_body
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import Prewarm, SetPriority
from thunder_scheduling.events import ProgramEnded
from thunder_testkit.cores import ScriptedCore
from thunder_testkit.polling import until_async


def test_chat_and_completions_bodies_ask_for_one_token_unstreamed() -> None:
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {}, "n": 2,
            "max_completion_tokens": 500}
    warm = prefill_body(EnginePaths.CHAT_COMPLETIONS, body)
    assert warm == {"model": "m", "messages": [], "max_tokens": 1}
    assert body["stream"] is True  # the remembered body is not changed


def test_generate_bodies_set_max_new_tokens() -> None:
    body = {"text": "x", "sampling_params": {"temperature": 0.5, "max_new_tokens": 99}}
    warm = prefill_body(EnginePaths.GENERATE, body)
    assert warm["sampling_params"] == {"temperature": 0.5, "max_new_tokens": 1}
    assert body["sampling_params"]["max_new_tokens"] == 99


async def _prewarm(status: int) -> tuple[list[httpx.Request], ServiceMetrics]:
    sent: list[httpx.Request] = []

    def engine(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(engine))
    backend = SGLangBackend("gpu1", "http://gpu1:30000", http)
    metrics = ServiceMetrics()
    core = ScriptedCore([[SetPriority("p", 4)], [Prewarm("p", "gpu1")]])
    driver = Driver(core, {"gpu1": backend}, ManualClock(0.0), metrics, prewarm_http=http)
    driver.remember_body("p", EnginePaths.CHAT_COMPLETIONS,
                         {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                          "stream": True})
    driver.feed(ProgramEnded(at=0.0, program_id="x"))  # -> SetPriority
    driver.feed(ProgramEnded(at=0.0, program_id="x"))  # -> Prewarm
    await until_async(lambda: driver.tracked()["background_tasks"] == 0)
    await http.aclose()
    return sent, metrics


async def test_prewarm_sends_the_last_body_as_a_prefill_only_request() -> None:
    sent, metrics = await _prewarm(200)
    (request,) = sent
    assert str(request.url) == "http://gpu1:30000" + EnginePaths.CHAT_COMPLETIONS
    body: dict[str, Any] = json.loads(request.content)
    assert body["max_tokens"] == 1 and "stream" not in body
    assert body["rid"].startswith("p:warm-")  # decorated by the backend like any request
    assert metrics.registry.get_sample_value("thunder_prewarms_total") == 1


async def test_a_refused_prewarm_is_counted_not_raised() -> None:
    sent, metrics = await _prewarm(503)
    assert len(sent) == 1
    assert metrics.registry.get_sample_value("thunder_prewarms_total") == 0
    assert metrics.registry.get_sample_value(
        "thunder_engine_lever_failures_total", {"lever": "prewarm"}) == 1
