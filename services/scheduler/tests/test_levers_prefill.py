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


def _recording_sglang(status: int = 200) -> tuple[list[httpx.Request], httpx.AsyncClient,
                                                   SGLangBackend]:
    """An SGLang backend ``gpu1`` whose engine (an ``httpx.MockTransport``: test support)
    records every request it gets and answers ``status``."""
    sent: list[httpx.Request] = []

    def engine(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(engine))
    return sent, http, SGLangBackend("gpu1", "http://gpu1:30000", http)


def _bodies(sent: list[httpx.Request]) -> list[dict[str, Any]]:
    return [json.loads(request.content) for request in sent]


def _tool_call_prefix(call_id: str, tool: str = "f") -> dict[str, Any]:
    """A chat body ending in the assistant's call ``call_id`` of ``tool``: a split's prefix."""
    call = {"id": call_id, "type": "function", "function": {"name": tool, "arguments": "{}"}}
    return {"model": "m", "messages": [{"role": "user", "content": "go"},
                                       {"role": "assistant", "content": None,
                                        "tool_calls": [call]}]}


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
    sent, http, backend = _recording_sglang(status)
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


def _split_count(metrics: ServiceMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("thunder_prompt_splits_total",
                                             {"result": result}) or 0.0


async def test_prompt_split_prefills_once_skips_a_paused_program_and_feeds_the_prewarm() -> None:
    """The split's prefix is prefilled on the program's engine once; the same prefix again is
    still cached; while paused nothing is sent, and the pre-restore ``Prewarm`` warms the
    newest known prefix instead (one path for both)."""
    from thunder_scheduling.commands import Admit, Pause, Resume
    from thunder_scheduling.events import RequestArrived

    requests, http, backend = _recording_sglang()
    metrics = ServiceMetrics()
    core = ScriptedCore([[Admit("p", "p:1", "gpu1")], [Pause("p", "gpu1", 10)],
                         [Resume("p", "gpu1", "gpu1", migrated=False)], [Prewarm("p", "gpu1")]])
    driver = Driver(core, {"gpu1": backend}, ManualClock(0.0), metrics, prewarm_http=http)
    driver.arrive("p", "p:1", RequestArrived(at=0.0, program_id="p", request_id="p:1",
                                             prompt_tokens_estimate=10))
    prefix = _tool_call_prefix

    async def settle() -> None:
        await until_async(lambda: driver.tracked()["background_tasks"] == 0)

    driver.prompt_split("p", prefix("c1"))
    await settle()
    driver.prompt_split("p", prefix("c1"))        # the same prefix: still cached
    driver.feed(ProgramEnded(at=1.0, program_id="x"))  # -> Pause
    driver.prompt_split("p", prefix("c2"))        # paused: nothing now
    await settle()
    sent = _bodies(requests)
    assert [body["messages"] for body in sent] == [prefix("c1")["messages"]]
    assert sent[0]["max_tokens"] == 1 and sent[0]["rid"] == "p:split-1"
    driver.feed(ProgramEnded(at=2.0, program_id="x"))  # -> Resume
    driver.feed(ProgramEnded(at=3.0, program_id="x"))  # -> Prewarm
    await settle()
    await http.aclose()
    assert [body["messages"] for body in _bodies(requests)] == [prefix("c1")["messages"],
                                                                prefix("c2")["messages"]]
    assert [_split_count(metrics, r) for r in ("sent", "cached", "paused")] == [1, 1, 1]


async def test_prompt_split_off_sends_nothing() -> None:
    _sent, http, backend = _recording_sglang()
    driver = Driver(ScriptedCore([]), {"gpu1": backend}, ManualClock(0.0), ServiceMetrics(),
                    prewarm_http=http, prompt_split=False)
    driver.programs.ensure("p").backend = "gpu1"
    driver.prompt_split("p", {"messages": [{"role": "user", "content": "go"}]})
    assert driver.tracked()["background_tasks"] == 0 and driver.programs.last_body("p") is None
    await http.aclose()


async def test_prompt_split_follows_the_cores_room_rule() -> None:
    """With the real core: Thunder lets an acting program's KV decay (30 s half-life), so a
    split for a tool announced to take 120 s is held back (``tool_long``); a tool it has seen
    take 2 s is split; a split bigger than the room left is held back (``no_room``)."""
    from thunder_scheduling import make_scheduler
    from thunder_scheduling.events import (
        BackendUpdated,
        ProgramStarted,
        RequestArrived,
        RequestFinished,
        ToolFinished,
        ToolStarted,
    )

    requests, http, backend = _recording_sglang()
    metrics = ServiceMetrics()
    clock = ManualClock(0.0)
    driver = Driver(make_scheduler("thunder"), {"gpu1": backend}, clock, metrics,
                    prewarm_http=http)
    driver.feed(BackendUpdated(at=0.0, backend="gpu1", healthy=True, capacity_tokens=10_000,
                               page_size_tokens=1))
    driver.feed(ProgramStarted(at=0.0, program_id="p"))

    def respond(n: int, at: float) -> None:
        rid = f"p:{n}"
        driver.arrive("p", rid, RequestArrived(at=at, program_id="p", request_id=rid,
                                               prompt_tokens_estimate=1000))
        driver.feed(RequestFinished(at=at, program_id="p", request_id=rid, prompt_tokens=1000,
                                    completion_tokens=100, ends_with_tool_call=True))

    def prefix(call_id: str) -> dict[str, Any]:
        return _tool_call_prefix(call_id, tool="grep")

    respond(1, 0.0)
    driver.feed(ToolStarted(at=0.0, program_id="p", call_id="c0", tool_name="fetch",
                            expected_duration_s=120.0))
    driver.prompt_split("p", prefix("c0"), uncached_tokens=100)
    assert _split_count(metrics, "tool_long") == 1
    driver.feed(ToolFinished(at=0.0, program_id="p", call_id="c0"))
    driver.feed(ToolStarted(at=0.0, program_id="p", call_id="c1", tool_name="grep"))
    clock.advance(2.0)
    driver.feed(ToolFinished(at=2.0, program_id="p", call_id="c1"))
    respond(2, 2.0)
    driver.prompt_split("p", prefix("c2"), uncached_tokens=100)
    driver.prompt_split("p", prefix("c3"), uncached_tokens=20_000)
    await until_async(lambda: driver.tracked()["background_tasks"] == 0)
    await http.aclose()
    assert [_split_count(metrics, r) for r in ("sent", "no_room")] == [1, 1]
    assert [body["rid"] for body in _bodies(requests)] == ["p:split-1"]
