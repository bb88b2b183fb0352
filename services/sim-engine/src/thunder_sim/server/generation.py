"""The generating endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/generate``.

Response and stream-chunk shapes are SGLang 0.5.23's (``serving_chat.py``,
``serving_completions.py``, ``sse_utils.py``, ``tokenizer_manager._handle_batch_output``),
with ``--enable-cache-report`` behaviour always on (``usage.prompt_tokens_details.
cached_tokens``). The OpenAI streams' bytes come from :mod:`thunder_sim.server.sse`.
``/generate`` streams carry the cumulative text (SGLang's default non-incremental output).

A streaming handler sleeps on its ticket's event; the engine loop wakes it on the first token,
at the stream interval and at the end (:mod:`thunder_sim.server.runner`), and each wake-up is
one socket write carrying every token since the last one. Prompts are keyed through the
server's :class:`~thunder_sim.server.prompt_keys.PromptKeyCache`.

If the client goes away before the request ends, the request is aborted in the engine, as
SGLang does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from thunder_sim import tokenizer as tok
from thunder_sim.engine.types import FinishedRequest
from thunder_sim.server.parse import (
    ApiError,
    GenSpec,
    Limits,
    parse_chat,
    parse_completion,
    parse_generate,
)
from thunder_sim.server.prompt_keys import PromptKeyCache
from thunder_sim.server.runner import DuplicateRidError, EngineRunner, Ticket
from thunder_sim.server.sse import (
    DONE,
    SSE_HEADERS,
    ChatEvents,
    CompletionEvents,
    SseResponse,
    finish_reason_json,
    usage_json,
)

# Bodies above this are parsed in a worker thread: an 8 KB chat body is ~2k tokens of context,
# whose new messages can take milliseconds to tokenize; in a thread, the GIL's 5 ms switch
# interval (sys.getswitchinterval) bounds how long the engine loop waits for it (256 text-prompt
# programs at scale 20: 9.0% lost step time vs 11.8% with a 32 KB threshold, one A/B pair).
# Trace bodies (block ids) stay under it up to ~50k-token prompts and are parsed inline.
BIG_BODY_BYTES = 8 * 1024
Parser = Callable[[dict[str, Any], Limits, PromptKeyCache | None], GenSpec]


def json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (ApiError otherwise)."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ApiError(f"Invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object")
    return body


def meta_info(ticket: Ticket, f: FinishedRequest | None) -> dict[str, Any]:
    """SGLang's ``meta_info`` (latencies in modelled seconds)."""
    cached = f.cached_tokens if f is not None else 0
    meta: dict[str, Any] = {
        "id": ticket.rid,
        "finish_reason": finish_reason_json(f) if f is not None else None,
        "prompt_tokens": ticket.prompt_tokens,
        "weight_version": "default",
        "num_retractions": f.retractions if f is not None else 0,
        "reasoning_tokens": 0,
        "completion_tokens": ticket.generated_tokens,
        "cached_tokens": cached,
    }
    if cached > 0:
        host = f.host_cached_tokens if f is not None else 0
        meta["cached_tokens_details"] = {"device": cached - host, "host": host}
    if f is not None:
        meta["e2e_latency"] = f.finished_s - f.arrival_s
    return meta


class GenerationApi:
    def __init__(self, runner: EngineRunner, limits: Limits, served_model_name: str) -> None:
        self.runner = runner
        self.limits = limits
        self.model = served_model_name
        self.prompt_keys = PromptKeyCache(limits.page_tokens)

    async def _parse(self, request: web.Request, parse: Parser) -> GenSpec:
        raw = await request.read()

        def run() -> GenSpec:
            return parse(json_object(raw), self.limits, self.prompt_keys)

        # tokenizing a large text prompt takes milliseconds: keep it off the engine's loop
        return await asyncio.to_thread(run) if len(raw) > BIG_BODY_BYTES else run()

    # -- shared plumbing ---------------------------------------------------------------------
    def _submit(self, spec: GenSpec) -> Ticket:
        try:
            return self.runner.submit(
                spec.rid, spec.prompt_blocks, spec.prompt_tokens, spec.max_new_tokens,
                stream=spec.stream, priority=spec.priority, session_id=spec.session_id,
            )
        except DuplicateRidError as e:
            raise ApiError(str(e)) from None

    async def _wait(self, ticket: Ticket) -> FinishedRequest:
        try:
            while ticket.finished is None:
                await ticket.event.wait()
                ticket.event.clear()
            return ticket.finished
        finally:
            if ticket.finished is None:   # handler cancelled: the client went away
                self.runner.abort(ticket.rid)

    async def _stream(
        self,
        request: web.Request,
        ticket: Ticket,
        chunks: Callable[[int, int, FinishedRequest | None], bytes],
    ) -> web.StreamResponse:
        resp = SseResponse(headers=SSE_HEADERS)
        try:
            await resp.prepare(request)   # the headers leave with the first chunk
            sent = 0
            while True:
                await ticket.event.wait()
                ticket.event.clear()
                done = ticket.finished
                upto = ticket.generated_tokens
                if done is not None:
                    await resp.write_eof(chunks(sent, upto, done) + DONE)   # one write
                    break
                if upto > sent:
                    await resp.write(chunks(sent, upto, None))
                    sent = upto
        finally:
            if ticket.finished is None:
                self.runner.abort(ticket.rid)
        return resp

    # -- /v1/chat/completions ----------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        spec = await self._parse(request, parse_chat)
        model = spec.model or self.model
        ticket = self._submit(spec)
        created = int(time.time())
        if not spec.stream:
            f = await self._wait(ticket)
            return web.json_response(body=orjson.dumps({
                "id": ticket.rid, "object": "chat.completion", "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant",
                                "content": tok.filler_text(0, f.completion_tokens),
                                "reasoning_content": None},
                    "logprobs": None,
                    "finish_reason": f.finish_reason.value,
                    "matched_stop": None,
                }],
                "usage": usage_json(f.prompt_tokens, f.completion_tokens, f.cached_tokens),
                "metadata": {"weight_version": "default"},
            }))

        events = ChatEvents(ticket.rid, created, model, spec.include_usage)
        return await self._stream(request, ticket, events.chunks)

    # -- /v1/completions ---------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        spec = await self._parse(request, parse_completion)
        model = spec.model or self.model
        ticket = self._submit(spec)
        created = int(time.time())
        if not spec.stream:
            f = await self._wait(ticket)
            return web.json_response(body=orjson.dumps({
                "id": ticket.rid, "object": "text_completion", "created": created,
                "model": model,
                "choices": [{"index": 0, "text": tok.filler_text(0, f.completion_tokens),
                             "logprobs": None, "finish_reason": f.finish_reason.value,
                             "matched_stop": None}],
                "usage": usage_json(f.prompt_tokens, f.completion_tokens, f.cached_tokens),
                "metadata": {"weight_version": "default"},
            }))
        events = CompletionEvents(ticket.rid, created, model, spec.include_usage)
        return await self._stream(request, ticket, events.chunks)

    # -- /generate ---------------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.StreamResponse:
        spec = await self._parse(request, parse_generate)
        ticket = self._submit(spec)
        if not spec.stream:
            f = await self._wait(ticket)
            return web.json_response(body=orjson.dumps(self._generate_out(ticket, f)))

        def chunks(sent: int, upto: int, f: FinishedRequest | None) -> bytes:
            return b"data: " + orjson.dumps(self._generate_out(ticket, f)) + b"\n\n"

        return await self._stream(request, ticket, chunks)

    @staticmethod
    def _generate_out(ticket: Ticket, f: FinishedRequest | None) -> dict[str, Any]:
        n = ticket.generated_tokens
        return {"text": tok.filler_text(0, n), "output_ids": tok.filler_ids(0, n),
                "meta_info": meta_info(ticket, f)}
