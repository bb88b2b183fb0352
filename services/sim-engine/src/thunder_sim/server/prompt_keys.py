"""Prompt -> engine page keys, memoised across requests (agent prompts repeat their prefix).

An agent program sends its whole growing context on every step, so nearly all of a prompt was
seen on the program's previous step. Recomputing it costs the server's event loop time in
proportion to the context (tokenizing ~4 characters per token, one blake2b per page); this
cache makes the cost proportional to what is new. It returns exactly what the uncached
functions of :mod:`thunder_sim.tokenizer` return (tests compare them).

- Chat prompts (:meth:`PromptKeyCache.chat_keys`): the rendered chat is a list of segments,
  one per message, that tokenize independently (:func:`thunder_sim.tokenizer.chat_segments`).
  A trie keyed by segment text (one trie per namespace seed) stores, per node, the page keys
  completed by that segment, the ids left over after the last full page, the chain digest and
  the token count. A request walks the trie (one dict lookup per message: hashing the
  segment's text, no tokenizing) and tokenizes only the segments it has not seen; the keys
  are the concatenation along the path plus one digest for the partial last page.
- Trace prompts (:meth:`PromptKeyCache.trace_keys`): the key of engine page ``i`` depends only
  on (namespace, trace block id, offset, partial) (:func:`thunder_sim.tokenizer.
  trace_block_keys`), memoised in one dict per (namespace, trace block size).

Memory is bounded: when the trie holds more than ``max_text_chars`` characters of segments, or
the trace memo more than ``max_trace_pages`` entries, that part is dropped whole and rebuilt on
demand (the next request pays the uncached cost once). Defaults: 64 Mi characters (~16 M tokens
of context, a few hundred MB at most) and 262,144 pages (~16 M tokens at 64 tokens per page),
enough for 256 programs of 64k-token contexts. Mutations are single dict assignments, so a
worker thread (big bodies are parsed off the event loop) and the loop can share the cache.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thunder_sim import tokenizer as tok

DEFAULT_MAX_TEXT_CHARS = 64 * 2**20   # module docstring
DEFAULT_MAX_TRACE_PAGES = 2**18       # module docstring


def _chain(prev: bytes, ids: Sequence[int]) -> bytes:
    """One link of :func:`thunder_sim.tokenizer.block_keys`' chain."""
    return hashlib.blake2b(prev + array("Q", ids).tobytes(), digest_size=8).digest()


def _key(digest: bytes) -> int:
    return int.from_bytes(digest, "little") >> 1  # as block_keys: non-negative 63-bit


@dataclass(slots=True, eq=False)
class _Node:
    """The prompt up to the end of one segment."""

    parent: _Node | None
    keys: tuple[int, ...]          # page keys this segment completed
    tail: tuple[int, ...]          # ids after the last full page (fewer than a page)
    chain: bytes                   # chain digest after the last full page
    tokens: int                    # tokens from the start of the prompt through this segment
    partial_key: int | None = None  # key of ``tail`` as a partial last page (lazily)
    children: dict[str, _Node] = field(default_factory=dict)


class PromptKeyCache:
    def __init__(
        self,
        page_tokens: int,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        max_trace_pages: int = DEFAULT_MAX_TRACE_PAGES,
    ) -> None:
        if page_tokens <= 0:
            raise ValueError(f"page_tokens must be positive, got {page_tokens}")
        self.page_tokens = page_tokens
        self.max_text_chars = max_text_chars
        self.max_trace_pages = max_trace_pages
        self._roots: dict[bytes, _Node] = {}
        self._text_chars = 0
        self._trace: dict[tuple[bytes, int], dict[tuple[int, int, bool], int]] = {}
        self._aligned: dict[bytes, dict[int, int]] = {}   # page == trace block: id -> key
        self._trace_pages = 0
        self.segment_hits = 0
        self.segment_misses = 0

    # -- chat ---------------------------------------------------------------------------------
    def chat_keys(
        self, messages: Sequence[Mapping[str, Any]], tools: Any = None, seed: bytes = b""
    ) -> tuple[tuple[int, ...], int]:
        """(page keys, prompt tokens) of a chat prompt; equal to ``block_keys(tokenize(
        render_chat(messages, tools)), page_tokens, seed)`` and its length."""
        node = self._roots.get(seed)
        if node is None:
            node = self._roots.setdefault(seed, _Node(None, (), (), seed, 0))
        for seg in tok.chat_segments(messages, tools):
            child = node.children.get(seg)
            if child is None:
                self.segment_misses += 1
                child = node.children.setdefault(seg, self._extend(node, seg))
                self._text_chars += len(seg)
            else:
                self.segment_hits += 1
            node = child
        path: list[_Node] = []
        n: _Node | None = node
        while n is not None:
            path.append(n)
            n = n.parent
        keys: list[int] = []
        for n in reversed(path):
            keys += n.keys
        if node.tail:
            if node.partial_key is None:
                node.partial_key = _key(_chain(node.chain, node.tail))
            keys.append(node.partial_key)
        if self._text_chars > self.max_text_chars:
            self._roots = {}
            self._text_chars = 0
        return tuple(keys), node.tokens

    def _extend(self, node: _Node, seg: str) -> _Node:
        ids = tok.tokenize(seg)
        pending = node.tail + tuple(ids)
        p = self.page_tokens
        full = len(pending) // p
        chain = node.chain
        keys: list[int] = []
        for i in range(full):
            chain = _chain(chain, pending[i * p:(i + 1) * p])
            keys.append(_key(chain))
        return _Node(node, tuple(keys), pending[full * p:], chain, node.tokens + len(ids))

    # -- trace --------------------------------------------------------------------------------
    def trace_keys(
        self,
        hash_ids: Sequence[int],
        prompt_tokens: int,
        namespace: str,
        trace_block_tokens: int = tok.TRACE_BLOCK_TOKENS,
    ) -> tuple[int, ...]:
        """Equal to ``trace_block_keys(hash_ids, prompt_tokens, page_tokens, namespace,
        trace_block_tokens)`` (same ValueError on a malformed prompt)."""
        if prompt_tokens <= 0 or not hash_ids:
            raise ValueError("a trace prompt needs prompt_tokens > 0 and at least one hash id")
        if not (len(hash_ids) - 1) * trace_block_tokens < prompt_tokens \
                <= len(hash_ids) * trace_block_tokens:
            # the uncached function words the error
            return tok.trace_block_keys(hash_ids, prompt_tokens, self.page_tokens, namespace,
                                        trace_block_tokens)
        ns = namespace.encode()
        if self.page_tokens == trace_block_tokens:
            return self._trace_keys_aligned(hash_ids, prompt_tokens, ns)
        memo = self._trace.get((ns, trace_block_tokens))
        if memo is None:
            memo = self._trace.setdefault((ns, trace_block_tokens), {})
        p = self.page_tokens
        keys: list[int] = []
        misses = 0
        for end in range(p, prompt_tokens + p, p):
            last = min(end, prompt_tokens) - 1
            block, offset = divmod(last, trace_block_tokens)
            partial = last == prompt_tokens - 1 and offset != trace_block_tokens - 1
            k = (hash_ids[block], offset, partial)
            key = memo.get(k)
            if key is None:
                misses += 1
                key = memo[k] = self._trace_digest(ns, *k)
            keys.append(key)
        self._trace_pages += misses
        self._trim_trace()
        return tuple(keys)

    def _trace_keys_aligned(
        self, hash_ids: Sequence[int], prompt_tokens: int, ns: bytes
    ) -> tuple[int, ...]:
        """Pages are trace blocks: page ``i`` is block ``i`` at offset ``B-1`` except a partial
        last block; one dict lookup per block."""
        b = self.page_tokens
        full = self._aligned.get(ns)
        if full is None:
            full = self._aligned.setdefault(ns, {})
        last_offset = (prompt_tokens - 1) % b
        whole = len(hash_ids) if last_offset == b - 1 else len(hash_ids) - 1
        get = full.get
        keys = [get(h) for h in hash_ids[:whole]]
        if None in keys:
            for i, k in enumerate(keys):
                if k is None:
                    keys[i] = full[hash_ids[i]] = self._trace_digest(ns, hash_ids[i], b - 1,
                                                                     False)
                    self._trace_pages += 1
        if whole < len(hash_ids):  # partial last block: rarely repeats, not memoised
            keys.append(self._trace_digest(ns, hash_ids[-1], last_offset, True))
        self._trim_trace()
        return tuple(keys)  # type: ignore[arg-type]  # no None left

    @staticmethod
    def _trace_digest(ns: bytes, block_id: int, offset: int, partial: bool) -> int:
        return _key(hashlib.blake2b(b"%s\x1f%d\x1f%d\x1f%d" % (ns, block_id, offset, partial),
                                    digest_size=8).digest())

    def _trim_trace(self) -> None:
        if self._trace_pages > self.max_trace_pages:
            self._trace = {}
            self._aligned = {}
            self._trace_pages = 0
