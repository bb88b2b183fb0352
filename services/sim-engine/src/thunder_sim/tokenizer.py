"""Deterministic stand-in tokenizer: text -> token ids -> prefix-chained block keys.

The simulator has no model weights, so it cannot run the real tokenizer. What the engine model
needs is (a) realistic token *counts* and (b) the property that two prompts share a KV prefix
exactly as long as their leading text agrees. This module gives both, deterministically (the
same text always gives the same ids, in every process: no use of Python's salted ``hash``).

Rule (documented in the package README):

1. Text is cut into pieces by ``_PIECE_RE``: a chat special token (``<|im_start|>``) is one
   piece; otherwise a piece is an optional single leading space plus 1 to 4 non-space
   characters; any other whitespace character is a piece of its own. English prose averages
   about 4 characters per BPE token for GPT/Qwen-family tokenizers (OpenAI's rule of thumb,
   "one token generally corresponds to ~4 characters of text for common English text",
   https://help.openai.com/en/articles/4936856), and this rule lands close to that.
2. A piece's id is ``crc32(piece) % VOCAB_SIZE``; ``VOCAB_SIZE`` = 151,936, the ``vocab_size``
   of Qwen3-8B's ``config.json`` (https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json).
   Collisions only affect ids, never prefix matching, which uses the chained keys below.
3. Chat messages are first rendered with a fixed ChatML template (Qwen's format:
   ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
   ``<|im_start|>assistant\\n``), so the same conversation prefix gives the same tokens.
4. Block keys: the ids are cut into pages of ``page_tokens`` (the last page may be partial) and
   ``key_i = blake2b_64(key_{i-1} || ids of page i)``, seeded with a namespace (SGLang's
   ``extra_key`` / ``cache_salt``, which separate caches). A key thus identifies its whole
   prefix, like vLLM's block hashes (vllm/v1/core/kv_cache_utils.py, ``hash_block_tokens``).
5. Trace replay: a request may carry a trace's ``hash_ids`` (64-token blocks, prefix-unique
   within one trace file) instead of text; :func:`trace_block_keys` maps them onto the
   engine's pages, namespaced by the trace/session id so different traces never share blocks.

Generated output is made of :data:`FILLER_WORDS`, each exactly one piece (one token), so a
completion of N tokens re-tokenizes to N tokens when a client sends it back.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

VOCAB_SIZE = 151_936  # Qwen3-8B config.json vocab_size (see module docstring)
TRACE_BLOCK_TOKENS = 64  # block_size of the shared Claude Code traces (their README)

_PIECE_RE = re.compile(r"<\|[a-z_]+\|>| ?[^\s<]{1,4}|<|\s")
ASSISTANT_PROMPT = "<|im_start|>assistant\n"

# One token each under the rule above (a leading space and at most four letters).
FILLER_WORDS: tuple[str, ...] = (
    " the", " tool", " code", " file", " test", " step", " run", " plan",
    " read", " edit", " next", " then", " data", " list", " call", " done",
)


def tokenize(text: str) -> list[int]:
    """Token ids of ``text`` under the rule in the module docstring."""
    crc = zlib.crc32
    return [crc(p.encode()) % VOCAB_SIZE for p in _PIECE_RE.findall(text)]


def count_tokens(text: str) -> int:
    return len(_PIECE_RE.findall(text))


def _content_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                parts.append(text if isinstance(text, str) else orjson.dumps(
                    part, option=orjson.OPT_SORT_KEYS).decode())
            else:
                parts.append(str(part))
        return "".join(parts)
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()


def chat_segments(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> list[str]:
    """The rendered chat (rule 3) cut at message boundaries: ``"".join`` of it is
    :func:`render_chat`. Every segment starts with the special piece ``<|im_start|>`` and ends
    with ``<|im_end|>\\n`` (the last one with ``assistant\\n``), and no piece of ``_PIECE_RE``
    can reach across a ``<`` it did not start at, so tokenizing the segments one by one gives
    exactly the ids of the whole text (what :class:`PromptKeyCache` relies on)."""
    out: list[str] = []
    if tools:
        out.append("<|im_start|>system\n# Tools\n"
                   + orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode() + "<|im_end|>\n")
    for m in messages:
        seg = f"<|im_start|>{m.get('role', 'user')}\n" + _content_text(m.get("content"))
        calls = m.get("tool_calls")
        if calls:
            seg += "\n<tool_call>" + orjson.dumps(calls, option=orjson.OPT_SORT_KEYS).decode()
        out.append(seg + "<|im_end|>\n")
    out.append(ASSISTANT_PROMPT)
    return out


def render_chat(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
    """Render chat messages with the fixed ChatML template (module docstring, rule 3)."""
    return "".join(chat_segments(messages, tools))


def namespace_seed(*parts: str | None) -> bytes:
    """Chain seed separating caches (SGLang ``extra_key`` / ``cache_salt``); b"" for none."""
    present = [p for p in parts if p]
    if not present:
        return b""
    return hashlib.blake2b("\x1f".join(present).encode(), digest_size=8).digest()


def block_keys(
    token_ids: Sequence[int], page_tokens: int, seed: bytes = b""
) -> tuple[int, ...]:
    """Prefix-chained keys of ``token_ids`` cut into pages (last page may be partial)."""
    if page_tokens <= 0:
        raise ValueError(f"page_tokens must be positive, got {page_tokens}")
    keys: list[int] = []
    prev = seed
    for start in range(0, len(token_ids), page_tokens):
        page = array("Q", token_ids[start:start + page_tokens]).tobytes()
        prev = hashlib.blake2b(prev + page, digest_size=8).digest()
        keys.append(int.from_bytes(prev, "little") >> 1)  # non-negative 63-bit
    return tuple(keys)


def trace_block_keys(
    hash_ids: Sequence[int],
    prompt_tokens: int,
    page_tokens: int,
    namespace: str,
    trace_block_tokens: int = TRACE_BLOCK_TOKENS,
) -> tuple[int, ...]:
    """Engine page keys for a prompt given as a trace's block ids.

    Engine page ``i`` covers tokens ``[i*P, min((i+1)*P, prompt_tokens))``. Its key is the
    namespaced trace id of the trace block holding the page's last token plus that token's
    offset inside the block: trace ids are prefix-unique, so equal (id, offset) pairs imply an
    equal prefix up to that token. With ``P == trace_block_tokens`` this is one key per id.
    """
    if prompt_tokens <= 0 or not hash_ids:
        raise ValueError("a trace prompt needs prompt_tokens > 0 and at least one hash id")
    max_tokens = len(hash_ids) * trace_block_tokens
    if not (len(hash_ids) - 1) * trace_block_tokens < prompt_tokens <= max_tokens:
        raise ValueError(
            f"prompt_tokens={prompt_tokens} does not fit {len(hash_ids)} blocks of "
            f"{trace_block_tokens} tokens (the last block may be partial)"
        )
    ns = namespace.encode()
    keys: list[int] = []
    for end in range(page_tokens, prompt_tokens + page_tokens, page_tokens):
        last = min(end, prompt_tokens) - 1
        block, offset = divmod(last, trace_block_tokens)
        # a partial last trace block is its own content: mark it so it never equals a full one
        partial = last == prompt_tokens - 1 and offset != trace_block_tokens - 1
        digest = hashlib.blake2b(
            b"%s\x1f%d\x1f%d\x1f%d" % (ns, hash_ids[block], offset, partial), digest_size=8
        ).digest()
        keys.append(int.from_bytes(digest, "little") >> 1)
    return tuple(keys)


_FILLER_CYCLE = "".join(FILLER_WORDS)
_FILLER_OFFSETS = tuple(sum(len(w) for w in FILLER_WORDS[:i]) for i in range(len(FILLER_WORDS) + 1))


def filler_text(start_token: int, num_tokens: int) -> str:
    """Output text for tokens ``[start_token, start_token + num_tokens)``: one word each
    (word ``i % 16``), cut from a repetition of the 16-word cycle."""
    if num_tokens <= 0:
        return ""
    n = len(FILLER_WORDS)
    base = start_token - start_token % n
    cycles, end_word = divmod(start_token + num_tokens - base, n)
    begin = _FILLER_OFFSETS[start_token - base]
    return (_FILLER_CYCLE * (cycles + 1))[begin:cycles * len(_FILLER_CYCLE)
                                          + _FILLER_OFFSETS[end_word]]


def filler_ids(start_token: int, num_tokens: int) -> list[int]:
    return tokenize(filler_text(start_token, num_tokens))


def flatten_ids(values: Iterable[Any]) -> list[int]:
    """Validate a list of token ids (non-negative 63-bit ints); ValueError otherwise."""
    fast = values if isinstance(values, list) else list(values)
    if all(type(v) is int for v in fast) and (not fast or (min(fast) >= 0
                                                            and max(fast) < 2**63)):
        return fast  # the common case, checked in C-speed builtins
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise ValueError(f"token ids must be non-negative integers, got {v!r}")
        out.append(v)
    return out
