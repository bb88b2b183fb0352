"""A zero-work engine: a raw asyncio HTTP/1.1 server answering fixed SGLang/OpenAI responses.

It does no inference and almost no parsing, so a benchmark through it measures only what sits
in front of it (the proxy). It answers:

* ``POST /v1/chat/completions``: a fixed chat completion (with usage); when the body holds
  ``"stream":true`` (or ``"stream": true``) a fixed SSE stream (4 content chunks, the
  usage-only chunk, ``[DONE]``) in one chunked-encoding write;
* ``GET /server_info``, ``/v1/loads``, ``/health``, ``/v1/models``: what the scheduler's SGLang
  backend probes, so the real service accepts it as an SGLang engine (capacity 10^6 tokens).

Usage: ``python zero_engine.py`` prints ``listening on http://127.0.0.1:<port>`` once
listening (port 0: a free one).
"""

from __future__ import annotations

import asyncio
import json
import sys

COMPLETION = json.dumps({
    "id": "zero-1", "object": "chat.completion", "created": 0, "model": "zero",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10,
              "prompt_tokens_details": {"cached_tokens": 0}},
}).encode()


def _chunk(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _delta(content: str | None, finish: str | None) -> dict[str, object]:
    delta = {} if content is None else {"content": content}
    return {"id": "zero-1", "object": "chat.completion.chunk", "created": 0, "model": "zero",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


_EVENTS = b"".join([
    _chunk(_delta("o", None)), _chunk(_delta("k", None)), _chunk(_delta("!", None)),
    _chunk(_delta(None, "stop")),
    _chunk({"id": "zero-1", "object": "chat.completion.chunk", "created": 0, "model": "zero",
            "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                     "total_tokens": 12}}),
    b"data: [DONE]\n\n",
])
STREAM = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + f"{len(_EVENTS):x}\r\n".encode() + _EVENTS + b"\r\n0\r\n\r\n"
)


def _json_response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


WHOLE = _json_response(COMPLETION)
GETS = {
    b"/server_info": _json_response(json.dumps({
        "max_total_num_tokens": 1_000_000, "page_size": 1, "served_model_name": "zero",
        "context_length": 32768}).encode()),
    b"/v1/loads": _json_response(json.dumps({"loads": [{
        "num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0,
        "max_total_num_tokens": 1_000_000, "cache_hit_rate": 0.0}]}).encode()),
    b"/health": _json_response(b"{}"),
    b"/v1/models": _json_response(b'{"object":"list","data":[{"id":"zero","object":"model"}]}'),
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class ZeroEngine(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                eol = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : eol if eol >= 0 else len(lower)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            method, path = head.split(b" ", 2)[:2]
            if method == b"POST":
                streaming = b'"stream":true' in body or b'"stream": true' in body
                self.transport.write(STREAM if streaming else WHOLE)
            else:
                self.transport.write(GETS.get(path.split(b"?")[0], NOT_FOUND))


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ZeroEngine, "127.0.0.1", 0, backlog=4096)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
