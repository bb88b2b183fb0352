"""Server-sent events of the OpenAI-compatible streams, as byte templates.

The shapes are SGLang 0.5.23's (``serving_chat.py``, ``serving_completions.py``): a chat stream
is a role chunk, content chunks, a finish chunk with an empty delta, then (with
``stream_options.include_usage``) a usage chunk with ``choices: []``, then ``data: [DONE]``; a
completions stream puts ``finish_reason`` on its last text chunk. Several tokens sent at once
are one chunk whose delta is their text, as SGLang sends with ``--stream-interval`` > 1.

Cost: a stream sends tens of chunks, so the constant parts of a chunk (id, created, model, the
choice's fixed fields) are serialized once per request with orjson and each chunk is
``prefix + json(text) + suffix``: one orjson call on a short string instead of building and
serializing nested dicts. A test checks the bytes decode to the same objects the dict-built
chunks give.

:class:`SseResponse` buffers the response headers until the first body bytes, so the headers,
the role chunk and the first token leave in one socket write (aiohttp's ``web.Response`` does
the same for whole bodies), and the end of a stream (finish chunk, usage, ``[DONE]``, the last
HTTP chunk) leaves in one more.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from thunder_sim import tokenizer as tok
from thunder_sim.engine.types import FinishedRequest, FinishReason

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


class SseResponse(web.StreamResponse):
    """A ``StreamResponse`` whose headers go out with the first body bytes."""

    # aiohttp's own switch (web.Response sets it False): buffer the headers until the first
    # write instead of sending them in a socket write of their own on prepare().
    _send_headers_immediately = False


def usage_json(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "reasoning_tokens": 0,
        "completion_tokens_details": None,
    }


def _head(rid: str, obj: str, created: int, model: str) -> bytes:
    """``{"id":..,"object":..,"created":..,"model":..`` without the closing brace."""
    return orjson.dumps({"id": rid, "object": obj, "created": created, "model": model})[:-1]


class ChatEvents:
    """The SSE bytes of one ``/v1/chat/completions`` stream."""

    def __init__(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        head = b"data: " + _head(rid, "chat.completion.chunk", created, model)
        self._head = head
        self._content = head + b',"choices":[{"index":0,"delta":{"reasoning_content":null,'
        self._open = self._content + b'"role":"assistant","content":""},' \
            + b'"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n'
        self._content += b'"content":'
        self._close = b'},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n'
        self._include_usage = include_usage

    def chunks(self, sent: int, upto: int, f: FinishedRequest | None) -> bytes:
        """Events for tokens ``[sent, upto)`` and, if ``f``, the end (not ``[DONE]``)."""
        out = [self._open] if sent == 0 and (upto > 0 or f is not None) else []
        if upto > sent:
            out += (self._content, orjson.dumps(tok.filler_text(sent, upto - sent)), self._close)
        if f is not None:
            out.append(self._head + b',"choices":[{"index":0,"delta":{"reasoning_content":null},'
                       b'"logprobs":null,"finish_reason":"' + f.finish_reason.value.encode()
                       + b'","matched_stop":null}]}\n\n')
            if self._include_usage:
                out.append(self._head + b',"choices":[],"usage":' + orjson.dumps(usage_json(
                    f.prompt_tokens, f.completion_tokens, f.cached_tokens)) + b"}\n\n")
        return b"".join(out)


class CompletionEvents:
    """The SSE bytes of one ``/v1/completions`` stream."""

    def __init__(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        self._head = b"data: " + _head(rid, "text_completion", created, model)
        self._text = self._head + b',"choices":[{"index":0,"text":'
        self._include_usage = include_usage

    def chunks(self, sent: int, upto: int, f: FinishedRequest | None) -> bytes:
        finish = b'"' + f.finish_reason.value.encode() + b'"' if f is not None else b"null"
        out = [self._text, orjson.dumps(tok.filler_text(sent, upto - sent)),
               b',"logprobs":null,"finish_reason":', finish,
               b',"matched_stop":null}],"usage":null}\n\n']
        if f is not None and self._include_usage:
            usage = usage_json(f.prompt_tokens, f.completion_tokens, f.cached_tokens)
            usage.pop("completion_tokens_details")   # exclude_none=True in SGLang
            out += (self._head, b',"choices":[],"usage":', orjson.dumps(usage), b"}\n\n")
        return b"".join(out)


def finish_reason_json(f: FinishedRequest) -> dict[str, Any]:
    """``meta_info.finish_reason`` of ``/generate``."""
    if f.finish_reason == FinishReason.ABORT:
        return {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
    return {"type": "length", "length": f.completion_tokens}
