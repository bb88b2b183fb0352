"""A FAKE OpenAI-compatible engine that follows a script of tool calls (for deterministic tests).

SmolLM2 on llama-server does not emit tool calls, so agent flows that need them (LangGraph's
ToolNode, OpenHands' terminal tool) run against this scripted fake instead. It is a real HTTP
server on a loopback port (aiohttp, in a background thread), so everything between the agent and
the engine (the scheduler's proxy, httpx, the openai SDK, litellm) runs for real.

The script is stateless per request: the turn to play is the number of tool results already in
the conversation (``role == "tool"`` messages), so concurrent conversations never interfere.
Each turn is either a list of tool calls or a final text answer. Usage is reported like SGLang
with ``--enable-cache-report``: prompt tokens are a deterministic count (about 4 characters per
token) and cached tokens are the part of the prompt this server has already seen as a prefix of
an earlier prompt, by whole 16-token blocks.

It also answers SGLang's control endpoints (``/server_info``, ``/v1/loads``, ``/metrics``,
``/abort_request``) with a fixed, stated capacity, so the scheduler registers it as an
``sglang=`` backend.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeToolCall", "ScriptedOpenAI"]

BLOCK_TOKENS = 16


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None
    """The call id to answer with (None: a fresh random one each time)."""


Turn = list[FakeToolCall] | str


def _count_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _render(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        # like a chat template: fields by name (key order and null vs "" content do not matter)
        calls = message.get("tool_calls")
        rendered = json.dumps(calls, sort_keys=True) if calls else ""
        parts.append(f"<{message.get('role')}>{content or ''}{rendered}")
    return "\n".join(parts)


@dataclass
class ScriptedOpenAI:
    """The fake engine. ``script`` maps the turn index to what the assistant says."""

    script: list[Turn] = field(default_factory=lambda: ["done"])
    model: str = "scripted"
    capacity_tokens: int = 1_000_000
    requests: list[dict[str, Any]] = field(default_factory=list)
    prefills: list[dict[str, Any]] = field(default_factory=list)
    """Prefill-only requests (one output token, unstreamed: the scheduler's warm-ups and prompt
    splits), recorded here instead of in ``requests``; they still fill the prefix cache."""
    aborted: list[str | None] = field(default_factory=list)
    _seen_blocks: set[tuple[int, str]] = field(default_factory=set)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    # -- serving ---------------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            app.router.add_get("/health", self._health)
            app.router.add_get("/server_info", self._server_info)
            app.router.add_get("/v1/loads", self._loads)
            app.router.add_get("/metrics", self._metrics)
            app.router.add_post("/abort_request", self._abort)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the scripted fake OpenAI server did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- handlers --------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _server_info(self, request: web.Request) -> web.Response:
        return web.json_response({
            "model_path": self.model, "served_model_name": self.model, "page_size": 1,
            "max_total_num_tokens": self.capacity_tokens, "context_length": 32768,
            "enable_cache_report": True,
        })

    async def _loads(self, request: web.Request) -> web.Response:
        return web.json_response({"loads": [{
            "dp_rank": 0, "num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0,
            "max_total_num_tokens": self.capacity_tokens, "token_usage": 0.0,
            "cache_hit_rate": 0.0, "gen_throughput": 0.0,
        }]})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text="", content_type="text/plain")

    async def _abort(self, request: web.Request) -> web.Response:
        self.aborted.append((await request.json()).get("rid"))
        return web.json_response({})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
        )

    def _cached_tokens(self, prompt: str) -> tuple[int, int]:
        tokens = _count_tokens(prompt)
        chunk = BLOCK_TOKENS * 4
        cached = 0
        matching = True
        for i in range(len(prompt) // chunk):
            key = (i, prompt[: (i + 1) * chunk])
            if matching and key in self._seen_blocks:
                cached += BLOCK_TOKENS
            else:
                matching = False
            self._seen_blocks.add(key)
        return tokens, min(cached, tokens)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = {"headers": dict(request.headers), "body": body}
        if body.get("max_tokens") == 1 and not body.get("stream"):
            self.prefills.append(record)
        else:
            self.requests.append(record)
        messages = body.get("messages") or []
        turn_index = sum(1 for m in messages if m.get("role") == "tool")
        turn = self.script[min(turn_index, len(self.script) - 1)]
        prompt_tokens, cached_tokens = self._cached_tokens(_render(messages))
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(turn, str):
            message["content"] = turn
            finish = "stop"
            completion_tokens = _count_tokens(turn)
        else:
            message["tool_calls"] = [
                {"id": call.id or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                 "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
                for call in turn
            ]
            finish = "tool_calls"
            completion_tokens = sum(_count_tokens(json.dumps(c.arguments)) + 2 for c in turn)
        usage = {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        }
        rid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        if not body.get("stream"):
            return web.json_response({
                "id": rid, "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            })
        return await self._stream(request, body, rid, message, finish, usage)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], rid: str, message: dict[str, Any],
        finish: str, usage: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            chunk = {"id": rid, "object": "chat.completion.chunk", "created": 0,
                     "model": self.model, "choices": choices, **(extra or {})}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}])
        if message.get("content"):
            words = str(message["content"]).split(" ")
            for i, word in enumerate(words):  # the pieces add up to the content exactly
                piece = word if i == len(words) - 1 else word + " "
                await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        for i, call in enumerate(message.get("tool_calls") or []):
            await send([{"index": 0, "delta": {"tool_calls": [
                {"index": i, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}]},
                "finish_reason": None}])
            await send([{"index": 0, "delta": {"tool_calls": [
                {"index": i, "function": {"arguments": call["function"]["arguments"]}}]},
                "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], {"usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
