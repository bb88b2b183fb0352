"""Streaming delivery (SGLang's --stream-interval), SSE byte templates, and the lag metrics."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from thunder_sim import tokenizer as tok
from thunder_sim.clock import ScaledClock
from thunder_sim.engine.types import FinishedRequest, FinishReason
from thunder_sim.server.app import create_app
from thunder_sim.server.command import add_arguments, build
from thunder_sim.server.lag import LATENESS_BUCKETS_S, LagMonitor
from thunder_sim.server.runner import RunnerSettings
from thunder_sim.server.sse import ChatEvents, CompletionEvents

Start = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    """Factory: an in-process server on a free loopback port -> (base URL, clock)."""
    runners: list[web.AppRunner] = []

    async def start(settings: RunnerSettings, time_scale: float = 50.0) -> tuple[str, Any]:
        p = argparse.ArgumentParser()
        add_arguments(p)
        engine, info = build(p.parse_args(["--port", "0"]))
        clock = ScaledClock(time_scale)
        runner = web.AppRunner(create_app(engine, info, clock, settings),
                               handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}", clock

    yield start
    for r in runners:
        await r.cleanup()


async def _events(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    async with c.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        lines = [ln async for ln in resp.aiter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    return [orjson.loads(ln[6:]) for ln in lines[:-1]]


@pytest.mark.parametrize("interval", [1, 8])
async def test_stream_interval_tokens_like_sglang(serve: Start, interval: int) -> None:
    # one decode iteration per engine call and no wall floor: chunk sizes are the interval's
    url, _ = await serve(RunnerSettings(min_step_wall_s=0.0, stream_interval_tokens=interval,
                                        stream_interval_wall_s=0.0))
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        events = await _events(c, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "go"}], "max_tokens": 40, "stream": True,
            "stream_options": {"include_usage": True}})
    contents = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert events[0]["choices"][0]["delta"] == {"reasoning_content": None,
                                                "role": "assistant", "content": ""}
    sizes = [tok.count_tokens(x) for x in contents[1:-1]]
    # first token at once, then every `interval` tokens, the rest with the end
    expected = [1] + [interval] * ((40 - 1) // interval)
    if (40 - 1) % interval:
        expected.append((40 - 1) % interval)
    assert sizes == expected
    assert "".join(contents[1:-1]) == tok.filler_text(0, 40)
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 40


async def test_wall_floor_coalesces_tokens_but_not_the_first_or_the_end(serve: Start) -> None:
    url, _ = await serve(RunnerSettings(min_step_wall_s=0.0, stream_interval_wall_s=10.0),
                         time_scale=20.0)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        events = await _events(c, "/v1/completions", {"prompt": "go", "max_tokens": 30,
                                                      "stream": True})
    texts = [e["choices"][0]["text"] for e in events]
    assert [tok.count_tokens(t) for t in texts] == [1, 29]   # first token, then the end
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert events[0]["choices"][0]["finish_reason"] is None


def _chat_chunk(rid: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"reasoning_content": None, **delta},
                         "logprobs": None, "finish_reason": finish, "matched_stop": None}]}


def _decode(raw: bytes) -> list[Any]:
    parts = raw.split(b"\n\n")
    assert parts[-1] == b"" and all(p.startswith(b"data: ") for p in parts[:-1])
    return [orjson.loads(p[6:]) for p in parts[:-1]]


def _finished(reason: FinishReason) -> FinishedRequest:
    return FinishedRequest(rid="r\"1", prompt_tokens=10, completion_tokens=5, cached_tokens=4,
                           recomputed_tokens=0, finish_reason=reason, arrival_s=0.0,
                           first_token_s=0.1, finished_s=0.2, retractions=0)


def test_chat_event_bytes_are_sglang_chunks() -> None:
    ev = ChatEvents('r"1', 7, "m", include_usage=True)
    assert _decode(ev.chunks(0, 2, None)) == [
        _chat_chunk('r"1', {"role": "assistant", "content": ""}, None),
        _chat_chunk('r"1', {"content": tok.filler_text(0, 2)}, None)]
    usage = {"prompt_tokens": 10, "total_tokens": 15, "completion_tokens": 5,
             "prompt_tokens_details": {"cached_tokens": 4}, "reasoning_tokens": 0,
             "completion_tokens_details": None}
    assert _decode(ev.chunks(2, 5, _finished(FinishReason.LENGTH))) == [
        _chat_chunk('r"1', {"content": tok.filler_text(2, 3)}, None),
        _chat_chunk('r"1', {}, "length"),
        {"id": 'r"1', "object": "chat.completion.chunk", "created": 7, "model": "m",
         "choices": [], "usage": usage}]


def test_completion_event_bytes_are_sglang_chunks() -> None:
    ev = CompletionEvents("r1", 7, "m", include_usage=True)
    head = {"id": "r1", "object": "text_completion", "created": 7, "model": "m"}
    end = _decode(ev.chunks(3, 5, _finished(FinishReason.ABORT)))
    assert end[0] == {**head, "choices": [{"index": 0, "text": tok.filler_text(3, 2),
                                           "logprobs": None, "finish_reason": "abort",
                                           "matched_stop": None}], "usage": None}
    assert end[1]["choices"] == [] and "completion_tokens_details" not in end[1]["usage"]


def test_lateness_histogram_and_window_quantiles() -> None:
    t = [0.0]
    clock = ScaledClock(20.0, lambda: t[0])
    lag = LagMonitor(clock)
    for i in range(100):
        t[0] += 0.011
        lag.record(0.030 if i == 50 else 0.001, 0.01)
    assert sum(lag.lateness_counts) == 100
    assert lag.lateness_counts[LATENESS_BUCKETS_S.index(0.001)] == 99
    assert lag.lateness_counts[LATENESS_BUCKETS_S.index(0.03)] == 1
    assert lag.last_window_p50_s == pytest.approx(0.001)
    assert lag.last_window_p99_s == pytest.approx(0.030)


async def test_effective_time_scale_is_exposed(serve: Start) -> None:
    url, clock = await serve(RunnerSettings())
    clock.set_time_scale(7.5)   # what --auto-time-scale does
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        info = (await c.get("/server_info")).json()
        metrics = (await c.get("/metrics")).text
    assert info["thunder_sim_time_scale"] == 7.5
    assert 'thunder_sim_time_scale{model_name="Qwen/Qwen3-8B"} 7.5' in metrics
    for name in ("event_loop_lag_p99_seconds{", "engine_wakeup_lateness_seconds_bucket{",
                 "lost_step_wall_seconds_total{", "planned_step_wall_seconds_total{"):
        assert f"thunder_sim_{name}" in metrics
