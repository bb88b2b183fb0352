"""Server-sent-event pass-through: forward engine bytes as they arrive, learn usage on the way.

Algorithm. Each upstream chunk is forwarded as soon as it arrives. A line scanner runs over
the same bytes, carrying at most one incomplete line between chunks, and looks only at
``data:`` lines (the SSE field that carries the JSON payload; other fields pass untouched):

* OpenAI paths: a payload is parsed (orjson) only when it mentions ``"usage"``,
  ``tool_calls`` or a non-null ``finish_reason``: that finds the usage chunk
  (``stream_options.include_usage``) and whether the turn ends with a tool call. Chunks of
  plain content deltas, the bulk of a stream, are never parsed.
* SGLang ``/generate``: every chunk carries the running ``meta_info``; only the last
  payload is kept and parsed once, when the stream ends (or the client leaves).

Usage-chunk removal. The proxy adds ``stream_options.include_usage`` to every OpenAI
streaming request so the engine reports tokens; when the client had not asked for it, the
usage-only chunk (``"choices": []`` with ``usage``, as the OpenAI API defines it) must not
reach the client. Only then does the scanner forward whole events (SSE events end with a
blank line) instead of raw chunks, holding back at most one incomplete event. Engines flush
one event per write, so in practice nothing is held.
"""

from __future__ import annotations

from typing import Any

import orjson

from thunder_scheduler.gate import Usage
from thunder_scheduler.proxy.usage import choice_tool_call, meta_info_usage, openai_usage

__all__ = ["SseScanner"]

CAPTURE_MAX_BYTES = 1 << 20
"""A stream whose payloads exceed this is not captured (no prompt split for it)."""
_DATA = b"data:"
_DONE = b"[DONE]"
_INTERESTING = (b'"usage"', b"tool_calls", b'finish_reason":"', b'finish_reason": "')


class SseScanner:
    """Scans an SSE byte stream for usage and tool calls; optionally drops the usage chunk.

    ``feed(chunk)`` returns the bytes to forward now; ``close()`` returns whatever was held
    back at the end of the stream. ``usage`` and ``ends_with_tool_call`` are valid at any
    time (for what has been seen so far).
    """

    __slots__ = (
        "_captured",
        "_captured_bytes",
        "_drop_usage",
        "_dropping",
        "_event",
        "_last_native",
        "_line",
        "_native",
        "_tool_call",
        "_usage",
    )

    def __init__(self, *, native: bool, drop_usage_chunk: bool, capture: bool = False) -> None:
        self._native = native
        # capture: keep the raw ``data:`` payloads (no parsing) so the caller can rebuild a
        # tool-call message after the stream (``next_prompt``); bounded by CAPTURE_MAX_BYTES
        self._captured: list[bytes] | None = [] if capture and not native else None
        self._captured_bytes = 0
        self._drop_usage = drop_usage_chunk and not native
        self._line = b""                  # incomplete line carried between chunks
        self._event = bytearray()         # current event's bytes (drop mode only)
        self._dropping = False            # the current event is the usage-only chunk
        self._usage: Usage | None = None
        self._tool_call = False
        self._last_native: bytes | None = None

    @property
    def usage(self) -> Usage | None:
        if self._native and self._usage is None and self._last_native is not None:
            try:
                payload = orjson.loads(self._last_native)
            except orjson.JSONDecodeError:
                return None
            if isinstance(payload, dict):
                self._usage = meta_info_usage(payload.get("meta_info"))
        return self._usage

    @property
    def ends_with_tool_call(self) -> bool:
        return self._tool_call

    @property
    def captured(self) -> list[bytes] | None:
        """The stream's payloads when capturing (None: not capturing, or over the bound)."""
        return self._captured

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes to forward to the client now."""
        if not self._drop_usage:
            self._scan(chunk)
            return chunk
        out = bytearray()
        data = self._line + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start : end + 1]
            start = end + 1
            stripped = line.rstrip(b"\r\n")
            if stripped:
                self._event += line
                if stripped.startswith(_DATA) and self._inspect(stripped[5:].strip()):
                    self._dropping = True
                continue
            # a blank line ends the event: forward it unless it was the usage-only chunk.
            if not self._dropping:
                out += self._event
                out += line
            self._event.clear()
            self._dropping = False
        self._line = data[start:]
        return bytes(out)

    def close(self) -> bytes:
        """End of stream: scan an unterminated last line; return bytes held back, if any."""
        rest, self._line = self._line, b""
        stripped = rest.strip()
        if stripped.startswith(_DATA) and self._inspect(stripped[5:].strip()):
            self._dropping = True
        if not self._drop_usage:
            return b""
        held = b"" if self._dropping else bytes(self._event) + rest
        self._event.clear()
        self._dropping = False
        return held

    def _scan(self, chunk: bytes) -> None:
        data = self._line + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end].rstrip(b"\r")
            start = end + 1
            if line.startswith(_DATA):
                self._inspect(line[5:].strip())
        self._line = data[start:]

    def _inspect(self, payload: bytes) -> bool:
        """Learn from one ``data:`` payload; True when it is a usage-only chunk to drop."""
        if not payload or payload == _DONE:
            return False
        if self._captured is not None:
            self._captured_bytes += len(payload)
            if self._captured_bytes > CAPTURE_MAX_BYTES:
                self._captured = None
            else:
                self._captured.append(payload)
        if self._native:
            self._last_native = payload
            self._usage = None
            return False
        if not any(marker in payload for marker in _INTERESTING):
            return False
        try:
            obj: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        usage = openai_usage(obj.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = obj.get("choices")
        if isinstance(choices, list):
            if choices and choice_tool_call(choices[0]):
                self._tool_call = True
            return self._drop_usage and usage is not None and not choices
        return False
