"""Request bodies of the SGLang-compatible API -> one validated :class:`GenSpec`.

Field names follow SGLang 0.5.23 (``sglang/srt/entrypoints/openai/protocol.py``
``ChatCompletionRequest`` / ``CompletionRequest``; ``sglang/srt/managers/io_struct.py``
``GenerateReqInput``). Unknown keys are ignored, as SGLang's pydantic models do. Bad values
raise :class:`ApiError` (HTTP 400 with SGLang's error body).

Default output lengths, as SGLang sets them:
- ``/v1/completions``: ``max_tokens`` defaults to 16 (``CompletionRequest.max_tokens = 16``).
- ``/generate``: ``sampling_params.max_new_tokens`` defaults to 128
  (``sglang/srt/sampling/sampling_params.py``, ``max_new_tokens = 128``); 0 is allowed
  (a prefix warm-up that only prefills).
- ``/v1/chat/completions``: SGLang passes ``max_completion_tokens or max_tokens`` and, when both
  are absent, generates until EOS or the context length. The simulator has no EOS, so it uses
  ``default_chat_max_tokens`` (server flag ``--default-max-tokens``, default 128, SGLang's
  ``SamplingParams`` default) and documents it.

Extension (ours): ``thunder_trace: {"hash_ids": [...], "prompt_tokens": N, "session": "<trace
id>", "block_tokens": 64}`` on any of the three endpoints replaces the prompt by a trace's
block ids (see :func:`thunder_sim.tokenizer.trace_block_keys`).

Chat and trace prompts go through a :class:`thunder_sim.server.prompt_keys.PromptKeyCache` when
one is given (the server passes its own), which returns the same keys at a cost proportional to
what the prompt adds to one seen before. Plain-text completions and ``/generate`` text are
tokenized whole.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from thunder_core.contract import TRACE_FIELD, TraceFields
from thunder_sim import tokenizer as tok
from thunder_sim.server.prompt_keys import PromptKeyCache

DEFAULT_COMPLETION_MAX_TOKENS = 16   # sglang CompletionRequest.max_tokens default
DEFAULT_GENERATE_MAX_NEW_TOKENS = 128  # sglang SamplingParams.max_new_tokens default


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Limits:
    page_tokens: int
    context_tokens: int
    kv_pool_tokens: int
    default_chat_max_tokens: int = 128


@dataclass(frozen=True, slots=True)
class GenSpec:
    rid: str
    prompt_blocks: tuple[int, ...]
    prompt_tokens: int
    max_new_tokens: int
    stream: bool
    include_usage: bool
    priority: int
    session_id: str | None
    model: str | None


def _opt_int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(f"{key} must be an integer, got {v!r}")
    if v < minimum:
        raise ApiError(f"{key} must be at least {minimum}, got {v}")
    return v


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ApiError(f"{key} must be a string, got {v!r}")
    return v


def _bool(body: dict[str, Any], key: str) -> bool:
    v = body.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ApiError(f"{key} must be a boolean, got {v!r}")
    return v


def _check_n(body: dict[str, Any]) -> None:
    n = _opt_int(body, "n", 1)
    if n is not None and n != 1:
        raise ApiError("n > 1 is not supported by the simulated engine")


def _trace_prompt(
    body: dict[str, Any], limits: Limits, cache: PromptKeyCache | None
) -> tuple[tuple[int, ...], int] | None:
    trace = body.get(TRACE_FIELD)
    if trace is None:
        return None
    if not isinstance(trace, dict):
        raise ApiError("thunder_trace must be an object")
    ids = trace.get(TraceFields.HASH_IDS)
    n = trace.get(TraceFields.PROMPT_TOKENS)
    session = trace.get(TraceFields.SESSION)
    block = trace.get(TraceFields.BLOCK_TOKENS, tok.TRACE_BLOCK_TOKENS)
    if not isinstance(ids, list) or not ids:
        raise ApiError("thunder_trace.hash_ids must be a non-empty list of integers")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ApiError("thunder_trace.prompt_tokens must be a positive integer")
    if not isinstance(session, str) or not session:
        raise ApiError("thunder_trace.session must be a non-empty string (the trace id)")
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ApiError("thunder_trace.block_tokens must be a positive integer")
    try:
        hash_ids = tok.flatten_ids(ids)
        if cache is not None and cache.page_tokens == limits.page_tokens:
            keys = cache.trace_keys(hash_ids, n, session, block)
        else:
            keys = tok.trace_block_keys(hash_ids, n, limits.page_tokens, session, block)
    except ValueError as e:
        raise ApiError(f"thunder_trace: {e}") from None
    return keys, n


def _seed(body: dict[str, Any]) -> bytes:
    return tok.namespace_seed(_opt_str(body, "extra_key"), _opt_str(body, "cache_salt"))


def _finish(
    body: dict[str, Any],
    limits: Limits,
    blocks: tuple[int, ...],
    prompt_tokens: int,
    max_new_tokens: int,
    include_usage: bool,
) -> GenSpec:
    if prompt_tokens <= 0:
        raise ApiError("The prompt is empty: it must contain at least one token")
    if prompt_tokens >= limits.context_tokens:
        raise ApiError(
            f"The input ({prompt_tokens} tokens) is longer than the model's context length "
            f"({limits.context_tokens} tokens)."
        )
    if prompt_tokens + max_new_tokens > limits.context_tokens:
        raise ApiError(
            f"Requested token count exceeds the model's maximum context length of "
            f"{limits.context_tokens} tokens. You requested a total of "
            f"{prompt_tokens + max_new_tokens} tokens: {prompt_tokens} tokens from the input "
            f"messages and {max_new_tokens} tokens for the completion. Please reduce the "
            f"number of tokens in the input messages or the completion to fit within the limit."
        )
    if prompt_tokens + max_new_tokens > limits.kv_pool_tokens:
        raise ApiError(
            f"Request prompt exceeds the KV memory budget: input_len={prompt_tokens}, "
            f"max_new_tokens={max_new_tokens}, max_total_num_tokens={limits.kv_pool_tokens}."
        )
    rid = _opt_str(body, "rid") or uuid.uuid4().hex
    priority = _opt_int(body, "priority", -(2**31)) or 0
    return GenSpec(
        rid=rid,
        prompt_blocks=blocks,
        prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens,
        stream=_bool(body, "stream"),
        include_usage=include_usage,
        priority=priority,
        session_id=_opt_str(body, "session_id"),
        model=_opt_str(body, "model"),
    )


def _text_prompt(text: str, body: dict[str, Any], limits: Limits) -> tuple[tuple[int, ...], int]:
    ids = tok.tokenize(text)
    return tok.block_keys(ids, limits.page_tokens, _seed(body)), len(ids)


def _ids_prompt(
    ids: list[Any], body: dict[str, Any], limits: Limits
) -> tuple[tuple[int, ...], int]:
    try:
        flat = tok.flatten_ids(ids)
    except ValueError as e:
        raise ApiError(str(e)) from None
    return tok.block_keys(flat, limits.page_tokens, _seed(body)), len(flat)


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise ApiError("stream_options must be an object")
    return _bool(opts, "include_usage")


def _chat_prompt(
    body: dict[str, Any], messages: list[Any], limits: Limits, cache: PromptKeyCache | None
) -> tuple[tuple[int, ...], int]:
    tools = body.get("tools")
    if cache is not None and cache.page_tokens == limits.page_tokens:
        return cache.chat_keys(messages, tools, _seed(body))
    return _text_prompt(tok.render_chat(messages, tools), body, limits)


def parse_chat(
    body: dict[str, Any], limits: Limits, cache: PromptKeyCache | None = None
) -> GenSpec:
    _check_n(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(f"messages[{i}] must be an object with a string 'role'")
    max_new = _opt_int(body, "max_completion_tokens", 1)
    if max_new is None:
        max_new = _opt_int(body, "max_tokens", 1)
    if max_new is None:
        max_new = limits.default_chat_max_tokens
    trace = _trace_prompt(body, limits, cache)
    blocks, n = trace or _chat_prompt(body, messages, limits, cache)
    return _finish(body, limits, blocks, n, max_new, _include_usage(body))


def parse_completion(
    body: dict[str, Any], limits: Limits, cache: PromptKeyCache | None = None
) -> GenSpec:
    _check_n(body)
    prompt = body.get("prompt")
    max_new = _opt_int(body, "max_tokens", 1)
    if max_new is None:
        max_new = DEFAULT_COMPLETION_MAX_TOKENS
    trace = _trace_prompt(body, limits, cache)
    if trace is not None:
        blocks, n = trace
    elif isinstance(prompt, str):
        blocks, n = _text_prompt(prompt, body, limits)
    elif isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
        blocks, n = _ids_prompt(prompt, body, limits)
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        return parse_completion({**body, "prompt": prompt[0]}, limits, cache)
    else:
        raise ApiError("prompt must be a string or a list of token ids (batches of prompts "
                       "are not supported by the simulated engine)")
    return _finish(body, limits, blocks, n, max_new, _include_usage(body))


def parse_generate(
    body: dict[str, Any], limits: Limits, cache: PromptKeyCache | None = None
) -> GenSpec:
    sp = body.get("sampling_params") or {}
    if not isinstance(sp, dict):
        raise ApiError("sampling_params must be an object (batched requests are not supported)")
    max_new = _opt_int(sp, "max_new_tokens", 0)
    if max_new is None:
        max_new = DEFAULT_GENERATE_MAX_NEW_TOKENS
    text, ids = body.get("text"), body.get("input_ids")
    trace = _trace_prompt(body, limits, cache)
    if trace is not None:
        blocks, n = trace
    elif text is not None and ids is not None:
        raise ApiError("Either text or input_ids should be provided, not both.")
    elif isinstance(text, str):
        blocks, n = _text_prompt(text, body, limits)
    elif isinstance(ids, list) and ids and all(isinstance(x, int) for x in ids):
        blocks, n = _ids_prompt(ids, body, limits)
    elif text is None and ids is None:
        raise ApiError("Either text, input_ids or input_embeds should be provided.")
    else:
        raise ApiError("text must be a string and input_ids a list of token ids "
                       "(batched requests are not supported by the simulated engine)")
    return _finish(body, limits, blocks, n, max_new, include_usage=False)
