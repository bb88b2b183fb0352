"""The SGLang-compatible server over real HTTP on loopback, with the real engine model."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from thunder_sim import tokenizer as tok
from thunder_sim.clock import ScaledClock
from thunder_sim.replay.live import MISS_METRIC, parse_metrics
from thunder_sim.server.app import create_app
from thunder_sim.server.command import add_arguments, build
from thunder_testkit import until_async

Start = Callable[..., Any]


@pytest.fixture
async def sim() -> AsyncIterator[Start]:
    """Factory: start an in-process server on a free loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(time_scale: float = 50.0, *flags: str) -> str:
        p = argparse.ArgumentParser()
        add_arguments(p)
        args = p.parse_args(["--port", "0", *flags])
        engine, info = build(args)
        app = create_app(engine, info, ScaledClock(time_scale))
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


def _sys_prompt() -> str:
    return " ".join(f"rule {i}: keep the tests lean and the engine honest." for i in range(60))


async def test_openai_client_chat_non_streaming_and_cached_prefix(sim: Start) -> None:
    url = await sim()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none")
    system = {"role": "system", "content": _sys_prompt()}
    first = [system, {"role": "user", "content": "fix the failing test please"}]
    second = [system, {"role": "user", "content": "now add a benchmark"}]
    r1 = await client.chat.completions.create(model="m", messages=first, max_tokens=17)
    r2 = await client.chat.completions.create(model="m", messages=second, max_tokens=9)
    assert r1.choices[0].finish_reason == "length"
    assert r1.usage is not None and r2.usage is not None
    assert r1.usage.completion_tokens == 17 and r2.usage.completion_tokens == 9
    assert tok.count_tokens(r1.choices[0].message.content or "") == 17
    ids1 = tok.tokenize(tok.render_chat(first))
    ids2 = tok.tokenize(tok.render_chat(second))
    assert r1.usage.prompt_tokens == len(ids1) and r2.usage.prompt_tokens == len(ids2)
    common = next(i for i, (a, b) in enumerate(zip(ids1, ids2, strict=False)) if a != b)
    assert r1.usage.prompt_tokens_details is not None
    assert r1.usage.prompt_tokens_details.cached_tokens == 0
    assert r2.usage.prompt_tokens_details is not None
    assert r2.usage.prompt_tokens_details.cached_tokens == common // 64 * 64 > 0
    await client.close()


async def test_openai_client_streaming_with_usage(sim: Start) -> None:
    url = await sim()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none")
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], max_completion_tokens=40,
        stream=True, stream_options={"include_usage": True})
    text, finish, usage, roles = "", None, None, []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            roles += [c.delta.role] if c.delta.role else []
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert roles == ["assistant"] and finish == "length"
    assert usage is not None and usage.completion_tokens == 40
    assert tok.count_tokens(text) == 40
    comp = await client.completions.create(model="m", prompt="count to three", max_tokens=5,
                                           stream=True)
    pieces = [c.choices[0] async for c in comp if c.choices]
    assert tok.count_tokens("".join(p.text for p in pieces)) == 5
    assert pieces[-1].finish_reason == "length"
    plain = await client.completions.create(model="m", prompt="count to three")
    assert plain.usage is not None and plain.usage.completion_tokens == 16  # SGLang default
    await client.close()


async def test_generate_shapes_input_ids_and_trace_blocks(sim: Start) -> None:
    url = await sim()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        ids = list(range(1, 300))
        r = (await c.post("/generate", json={"input_ids": ids,
                                             "sampling_params": {"max_new_tokens": 0}})).json()
        assert set(r) == {"text", "output_ids", "meta_info"}
        meta = r["meta_info"]
        assert meta["prompt_tokens"] == 299 and meta["completion_tokens"] == 0
        assert meta["finish_reason"] == {"type": "length", "length": 0}
        assert meta["e2e_latency"] > 0 and meta["id"]
        r = (await c.post("/generate", json={"input_ids": ids[:200] + [7] * 50, "rid": "x1",
                                             "sampling_params": {"max_new_tokens": 3}})).json()
        assert r["meta_info"]["cached_tokens"] == 192 and r["meta_info"]["id"] == "x1"
        assert len(r["output_ids"]) == 3 and tok.count_tokens(r["text"]) == 3
        trace = {"hash_ids": [5, 6, 7, 8], "prompt_tokens": 250, "session": "trace_0001"}
        await c.post("/generate", json={"thunder_trace": trace})
        again = {**trace, "hash_ids": [5, 6, 7, 9]}
        r = (await c.post("/generate", json={"thunder_trace": again,
                                             "sampling_params": {"max_new_tokens": 1}})).json()
        assert r["meta_info"]["cached_tokens"] == 192
        other = {**trace, "session": "trace_0002"}
        r = (await c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "ignored"}], "thunder_trace": other,
            "max_tokens": 1})).json()
        assert r["usage"]["prompt_tokens"] == 250
        assert r["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        lines = [ln async for ln in (await c.send(c.build_request(
            "POST", "/generate", json={"text": "stream me", "stream": True,
                                      "sampling_params": {"max_new_tokens": 12}}),
            stream=True)).aiter_lines() if ln]
        assert lines[-1] == "data: [DONE]"
        assert '"finish_reason":{"type":"length","length":12}' in lines[-2]


async def test_loads_metrics_info_models(sim: Start) -> None:
    url = await sim()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        await c.post("/v1/completions", json={"prompt": "warm " * 100, "max_tokens": 4})
        await c.post("/v1/completions", json={"prompt": "warm " * 100, "max_tokens": 4})
        loads = (await c.get("/v1/loads", params={"include": "all", "format": "json"})).json()
        load = loads["loads"][0]
        for key in ("num_running_reqs", "num_waiting_reqs", "num_used_tokens",
                    "num_total_tokens", "max_total_num_tokens", "token_usage",
                    "cache_hit_rate", "gen_throughput"):
            assert key in load
        assert load["num_used_tokens"] > 0 and loads["accelerator"].startswith("NVIDIA H100")
        assert (await c.get("/v1/loads", params={"include": "bogus"})).status_code == 400
        text = (await c.get("/metrics")).text
        for name in ("prompt_tokens_total", "generation_tokens_total", "cached_tokens_total",
                     "cache_hit_rate", "token_usage", "num_running_reqs", "num_queue_reqs",
                     "num_retracted_reqs", "evicted_tokens_total",
                     "time_to_first_token_seconds_bucket", "e2e_request_latency_seconds_count"):
            assert f"sglang:{name}{{" in text, name
        assert 'sglang:generation_tokens_total{engine_type="unified",is_streaming="false",' \
               'model_name="Qwen/Qwen3-8B"} 8.0' in text
        assert "thunder_sim_event_loop_lag_seconds_total{" in text
        info = (await c.get("/server_info")).json()
        assert info["page_size"] == 64 and info["max_total_num_tokens"] == load[
            "max_total_num_tokens"] and info["model_path"] == "Qwen/Qwen3-8B"
        assert (await c.get("/get_server_info")).json()["page_size"] == 64
        models = (await c.get("/v1/models")).json()
        assert models["data"][0]["id"] == "Qwen/Qwen3-8B"
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/health_generate")).status_code == 200
        sid = (await c.post("/open_session", json={"capacity_of_str_len": 1000})).json()
        assert isinstance(sid, str)
        dup = await c.post("/open_session", json={"capacity_of_str_len": 10, "session_id": sid})
        assert dup.status_code == 400 and "error" in dup.json()
        assert (await c.post("/close_session", json={"session_id": sid})).status_code == 200


async def test_abort_stops_a_running_request_and_flush_is_refused_meanwhile(
        sim: Start) -> None:
    url = await sim(1.0)  # real time: 20k output tokens would take minutes
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        req = c.build_request("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "write a novel"}], "rid": "long-1",
            "max_tokens": 20000, "stream": True})
        resp = await c.send(req, stream=True)
        lines = resp.aiter_lines()
        assert "assistant" in await anext(lines)
        flush = await c.post("/flush_cache")
        assert flush.status_code == 400
        t0 = time.monotonic()
        assert (await c.post("/abort_request", json={"rid": "long-1"})).status_code == 200
        rest = [ln async for ln in lines if ln]
        assert time.monotonic() - t0 < 2.0
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"abort"' in rest[-2]
        assert (await c.post("/flush_cache")).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert 'sglang:num_aborted_requests_total{engine_type="unified",' in metrics


async def test_wall_latency_is_modelled_latency_over_time_scale(sim: Start) -> None:
    scale = 10.0
    url = await sim(scale)
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        t0 = time.monotonic()
        r = (await c.post("/generate", json={"input_ids": list(range(2000)),
                                             "sampling_params": {"max_new_tokens": 300}}))
        wall_s = time.monotonic() - t0
    model_s = r.json()["meta_info"]["e2e_latency"]
    expected_wall_s = model_s / scale
    assert expected_wall_s > 0.15  # long enough that HTTP overhead is small
    assert 0.9 * expected_wall_s <= wall_s <= 1.1 * expected_wall_s + 0.03


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/v1/chat/completions", b"{not json", "Invalid JSON"),
    ("/v1/chat/completions", {"model": "m"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "max_tokens": -3}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 2}, "n > 1"),
    ("/v1/completions", {"prompt": 12}, "prompt"),
    ("/v1/completions", {"prompt": "x", "thunder_trace": {"hash_ids": [1],
                                                         "prompt_tokens": 99,
                                                         "session": "s"}}, "thunder_trace"),
    ("/generate", {"text": "a", "input_ids": [1]}, "not both"),
    ("/generate", {"text": "a", "sampling_params": {"max_new_tokens": "many"}}, "max_new"),
    ("/generate", {"input_ids": list(range(50000))}, "context length"),
    ("/abort_request", {}, "rid"),
])
async def test_bad_input_gets_400_with_a_reason(
        sim: Start, path: str, body: Any, needle: str) -> None:
    url = await sim()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        if isinstance(body, bytes):
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = await c.post(path, json=body)
    assert r.status_code == 400
    err = r.json()
    message = err["message"] if path.startswith("/v1/") else err["error"]["message"]
    assert needle in message
    if path.startswith("/v1/"):
        assert err["object"] == "error" and err["code"] == 400


async def test_wrong_content_type_and_duplicate_rid(sim: Start) -> None:
    url = await sim(1.0)
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.post("/v1/completions", content=b"prompt=x",
                         headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and "application/json" in r.json()["message"]
        body = {"prompt": "x", "rid": "same", "max_tokens": 5000}
        first = asyncio.create_task(c.post("/v1/completions", json=body))

        async def first_is_in() -> bool:
            [load] = (await c.get("/v1/loads")).json()["loads"]
            return bool(load["num_running_reqs"] + load["num_waiting_reqs"])

        await until_async(first_is_in, what="the first request to reach the engine")
        dup = await c.post("/v1/completions", json=body)
        assert dup.status_code == 400 and "Duplicate" in dup.json()["message"]
        await c.post("/abort_request", json={"abort_all": True})
        assert (await first).json()["choices"][0]["finish_reason"] == "abort"


async def test_metrics_expose_the_recompute_ledger(sim: Start) -> None:
    url = await sim()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for _ in range(2):
            r = await c.post("/v1/completions", json={"prompt": "warm " * 100, "max_tokens": 4,
                                                      "rid": "prog-1:0"})
            assert r.status_code == 200
        usage = r.json()["usage"]
        text = (await c.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line.startswith("thunder_sim_prompt_miss_tokens_total{"):
            cause = line.split('cause="')[1].split('"')[0]
            values[cause] = float(line.rsplit(" ", 1)[1])
    assert set(values) >= {"first_sight", "evicted_away", "over_admission", "retraction"}
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    # the first request misses everything, the second only its partial last block
    assert values["first_sight"] == 2 * usage["prompt_tokens"] - cached > 0
    assert sum(values.values()) == values["first_sight"]
    # what the live replay reads back from the same text
    parsed = parse_metrics(text)
    assert parsed[f"{MISS_METRIC}/first_sight"] == values["first_sight"]
    assert parsed[MISS_METRIC] == sum(values.values())


async def test_hicache_flags_server_info_and_metrics(sim: Start) -> None:
    """With ``--enable-hierarchical-cache`` a prefix evicted from the device comes back from
    host: counted as cached (``cache_source="host"``) and in ``load_back_tokens_total``."""
    url = await sim(50.0, "--enable-hierarchical-cache", "--max-total-tokens", "1280",
                    "--hicache-write-policy", "write_back")
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        info = (await c.get("/server_info")).json()
        assert info["enable_hierarchical_cache"] is True and info["hicache_ratio"] == 2.0
        assert info["hicache_size"] == 0 and info["hicache_write_policy"] == "write_back"

        async def gen(keys: list[int]) -> dict[str, Any]:
            trace = {"hash_ids": keys, "prompt_tokens": 64 * len(keys), "session": "s"}
            r = await c.post("/generate", json={"thunder_trace": trace,
                                                "sampling_params": {"max_new_tokens": 1}})
            meta: dict[str, Any] = r.json()["meta_info"]
            return meta

        await gen(list(range(100, 108)))
        await gen(list(range(500, 516)))          # evicts the first prompt's 8 blocks
        again = await gen(list(range(100, 110)))
        assert again["cached_tokens"] == 8 * 64
        assert again["cached_tokens_details"] == {"device": 0, "host": 8 * 64}
        text = (await c.get("/metrics")).text
    parsed = {ln.split("{")[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
              if ln.startswith("sglang:") and "{" in ln}
    assert parsed["sglang:load_back_tokens_total"] == 8 * 64
    assert parsed["sglang:hicache_host_total_tokens"] == (2560 // 64 + 1) * 64
    assert parsed["sglang:hicache_host_used_tokens"] > 0
    assert ('sglang:cached_tokens_total{cache_source="host",engine_type="unified",'
            f'model_name="Qwen/Qwen3-8B"}} {8 * 64}.0') in text
