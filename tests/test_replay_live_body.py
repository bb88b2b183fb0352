"""What the live replay puts on the wire: the message padding a size-based token estimator
(ThunderAgent's proxy) needs, against a real aiohttp server on loopback that records bodies.

The server is test support (it answers like an OpenAI endpoint with one streamed chunk and its
usage); the replay client under test is the real one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import default_trace_dir


async def _recording_server(bodies: list[dict[str, Any]]) -> tuple[web.AppRunner, str]:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
        usage = {"choices": [], "usage": {
            "prompt_tokens": body["thunder_trace"]["prompt_tokens"], "completion_tokens": 1,
            "total_tokens": body["thunder_trace"]["prompt_tokens"] + 1}}
        for data in (chunk, usage):
            await resp.write(f"data: {json.dumps(data)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _replay_bodies(chars_per_token: float) -> list[dict[str, Any]]:
    fit = ContextFit(context_tokens=32_768, sessions=1, max_steps=3, seed=3).load(
        default_trace_dir())

    async def main() -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        runner, url = await _recording_server(bodies)
        try:
            report = await LiveReplay(fit.programs, LiveConfig(
                target=url, time_scale=1000.0, concurrency=1, lifecycle="off",
                gaps=GapPolicy(tool_gap_cap_s=0.0, human_gap_cap_s=0.0),
                message_chars_per_token=chars_per_token)).run()
        finally:
            await runner.cleanup()
        assert report.failed_steps == 0, report.extra.get("last_error")
        return bodies

    return asyncio.run(main())


def test_messages_are_padded_to_the_stated_characters_per_prompt_token() -> None:
    bodies = _replay_bodies(4.0)
    assert len(bodies) >= 2
    for body in bodies:
        tokens = body["thunder_trace"]["prompt_tokens"]
        (message,) = body["messages"]
        assert len(message["content"]) == round(4.0 * tokens)
    # a size-based estimator (ThunderAgent: len(json.dumps(body)) / ratio) sees a stable ratio
    ratios = [len(json.dumps(b)) / b["thunder_trace"]["prompt_tokens"] for b in bodies]
    assert max(ratios) / min(ratios) < 1.2


def test_without_padding_the_message_is_a_short_placeholder() -> None:
    for body in _replay_bodies(0.0):
        assert body["messages"] == [{"role": "user", "content": "(trace replay)"}]


def test_a_negative_padding_is_refused_with_the_flag_named() -> None:
    with pytest.raises(ValueError, match="--message-chars-per-token"):
        LiveConfig(target="http://127.0.0.1:1", message_chars_per_token=-1.0)
