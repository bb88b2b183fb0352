"""The generating endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/generate``.

Response and stream-chunk shapes are SGLang 0.5.23's (``serving_chat.py``,
``serving_completions.py``, ``sse_utils.py``, ``tokenizer_manager._handle_batch_output``),
with ``--enable-cache-report`` behaviour always on (``usage.prompt_tokens_details.
cached_tokens``). Chat streams: a role chunk, content chunks, a finish chunk with an empty
delta, then (``stream_options.include_usage``) a usage chunk with ``choices: []``, then
``data: [DONE]``. Completions streams put ``finish_reason`` on the last text chunk.
``/generate`` streams carry the cumulative text (SGLang's default non-incremental output).

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
from thunder_sim.engine.types import FinishedRequest, FinishReason
from thunder_sim.server.parse import (
    ApiError,
    GenSpec,
    Limits,
    parse_chat,
    parse_completion,
    parse_generate,
)
from thunder_sim.server.runner import DuplicateRidError, EngineRunner, Ticket

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
BIG_BODY_BYTES = 256 * 1024  # bodies above this are parsed in a worker thread


def json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (ApiError otherwise)."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ApiError(f"Invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object")
    return body


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "reasoning_tokens": 0,
        "completion_tokens_details": None,
    }


def _finish_json(f: FinishedRequest) -> dict[str, Any]:
    if f.finish_reason == FinishReason.ABORT:
        return {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
    return {"type": "length", "length": f.completion_tokens}


def meta_info(ticket: Ticket, f: FinishedRequest | None) -> dict[str, Any]:
    """SGLang's ``meta_info`` (latencies in modelled seconds)."""
    cached = f.cached_tokens if f is not None else 0
    meta: dict[str, Any] = {
        "id": ticket.rid,
        "finish_reason": _finish_json(f) if f is not None else None,
        "prompt_tokens": ticket.prompt_tokens,
        "weight_version": "default",
        "num_retractions": f.retractions if f is not None else 0,
        "reasoning_tokens": 0,
        "completion_tokens": ticket.generated_tokens,
        "cached_tokens": cached,
    }
    if cached > 0:
        meta["cached_tokens_details"] = {"device": cached, "host": 0}
    if f is not None:
        meta["e2e_latency"] = f.finished_s - f.arrival_s
    return meta


class GenerationApi:
    def __init__(self, runner: EngineRunner, limits: Limits, served_model_name: str) -> None:
        self.runner = runner
        self.limits = limits
        self.model = served_model_name

    async def _parse(
        self, request: web.Request, parse: Callable[[dict[str, Any], Limits], GenSpec]
    ) -> GenSpec:
        raw = await request.read()

        def run() -> GenSpec:
            return parse(json_object(raw), self.limits)

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
        chunks: Callable[[int, int, FinishedRequest | None], list[bytes]],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        try:
            await resp.prepare(request)
            sent = 0
            while True:
                await ticket.event.wait()
                ticket.event.clear()
                done = ticket.finished
                upto = ticket.generated_tokens
                if upto > sent or done is not None:
                    await resp.write(b"".join(chunks(sent, upto, done)))
                    sent = upto
                if done is not None:
                    break
            await resp.write(DONE)
            await resp.write_eof()
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
                "usage": _usage(f.prompt_tokens, f.completion_tokens, f.cached_tokens),
                "metadata": {"weight_version": "default"},
            }))

        head = {"id": ticket.rid, "object": "chat.completion.chunk", "created": created,
                "model": model}

        def choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({**head, "choices": [{
                "index": 0, "delta": {"reasoning_content": None, **delta}, "logprobs": None,
                "finish_reason": finish, "matched_stop": None}]})

        def chunks(sent: int, upto: int, f: FinishedRequest | None) -> list[bytes]:
            out: list[bytes] = []
            if sent == 0 and (upto > 0 or f is not None):
                out.append(choice({"role": "assistant", "content": ""}))
            if upto > sent:
                out.append(choice({"content": tok.filler_text(sent, upto - sent)}))
            if f is not None:
                out.append(choice({}, f.finish_reason.value))
                if spec.include_usage:
                    out.append(_sse({**head, "choices": [], "usage": _usage(
                        f.prompt_tokens, f.completion_tokens, f.cached_tokens)}))
            return out

        return await self._stream(request, ticket, chunks)

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
                "usage": _usage(f.prompt_tokens, f.completion_tokens, f.cached_tokens),
                "metadata": {"weight_version": "default"},
            }))
        head = {"id": ticket.rid, "object": "text_completion", "created": created,
                "model": model}

        def chunks(sent: int, upto: int, f: FinishedRequest | None) -> list[bytes]:
            out = [_sse({**head, "choices": [{
                "index": 0, "text": tok.filler_text(sent, upto - sent), "logprobs": None,
                "finish_reason": f.finish_reason.value if f is not None else None,
                "matched_stop": None}], "usage": None})]
            if f is not None and spec.include_usage:
                usage = _usage(f.prompt_tokens, f.completion_tokens, f.cached_tokens)
                usage.pop("completion_tokens_details")   # exclude_none=True in SGLang
                out.append(_sse({**head, "choices": [], "usage": usage}))
            return out

        return await self._stream(request, ticket, chunks)

    # -- /generate ---------------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.StreamResponse:
        spec = await self._parse(request, parse_generate)
        ticket = self._submit(spec)
        if not spec.stream:
            f = await self._wait(ticket)
            return web.json_response(body=orjson.dumps(self._generate_out(ticket, f)))

        def chunks(sent: int, upto: int, f: FinishedRequest | None) -> list[bytes]:
            return [_sse(self._generate_out(ticket, f))]

        return await self._stream(request, ticket, chunks)

    @staticmethod
    def _generate_out(ticket: Ticket, f: FinishedRequest | None) -> dict[str, Any]:
        n = ticket.generated_tokens
        return {"text": tok.filler_text(0, n), "output_ids": tok.filler_ids(0, n),
                "meta_info": meta_info(ticket, f)}
