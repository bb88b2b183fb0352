"""KV memory of one engine: the page pool plus the radix cache, and the moves between them.

Every page is owned by exactly one of: the radix cache (whole prompt blocks, shared) or one
request (its uncached tail and output). ``used_pages == cache.total_blocks + sum(own_pages)``
at all times (checked by ``check``). Allocation first takes free pages, then evicts unlocked
cache leaves (SGLang's allocator does the same through ``evict_from_tree_cache``); it never
exceeds the pool (``KVPool.allocate`` raises if a caller skips the check).

``ledger`` (``ledger.py``) hears every block cached and evicted; the engine sets
``ledger.evictor`` to the program an allocation is for before it may evict.

With HiCache on, ``host`` (``host_cache.py``) hears every block inserted, matched and evicted,
and ``attach_prefix`` loads a host continuation of the device match back into the tree (its
pages are allocated here, evicting device cache if needed); loaded blocks are matched blocks,
so they count as cached tokens (SGLang's ``prefix_indices`` include them) and as hits in the
ledger.
"""

from __future__ import annotations

from collections.abc import Iterable

from thunder_sim.engine.host_cache import LOAD_BACK_THRESHOLD_TOKENS, HostCache
from thunder_sim.engine.kv_pool import KVPool
from thunder_sim.engine.ledger import MissLedger
from thunder_sim.engine.radix_cache import RadixCache
from thunder_sim.engine.request_state import ReqState


class KVMemory:
    __slots__ = ("cache", "evicted_tokens", "host", "ledger", "load_pending_tokens", "page_tokens",
                 "pool")

    def __init__(self, pool: KVPool, cache: RadixCache, host: HostCache | None = None) -> None:
        self.pool = pool
        self.cache = cache
        self.page_tokens = pool.page_tokens
        self.evicted_tokens = 0
        self.ledger = MissLedger(pool.page_tokens)
        self.host = host
        self.load_pending_tokens = 0    # loaded back, not yet charged to a prefill
        cache.on_evict = self.ledger.evicting if host is None else self._evicting

    def _evicting(self, blocks: tuple[int, ...], owner: str | None) -> None:
        self.ledger.evicting(blocks, owner)
        assert self.host is not None
        self.host.device_evicted(blocks)

    def available_tokens(self) -> int:
        """Free plus evictable tokens (SGLang's ``available_size() + evictable_size()``)."""
        return (self.pool.free_pages + self.cache.evictable_blocks) * self.page_tokens

    def evict(self, pages: int) -> int:
        freed = self.cache.evict(pages)
        if freed:
            self.pool.free(freed)
            self.evicted_tokens += freed * self.page_tokens
        return freed

    def ensure_free(self, pages: int) -> bool:
        """Make ``pages`` free, evicting cache if needed; False if impossible."""
        short = pages - self.pool.free_pages
        if short > 0:
            self.evict(short)
        return self.pool.free_pages >= pages

    def attach_prefix(self, st: ReqState, load_quota_pages: int = 0) -> int:
        """Match the request's whole prompt blocks, lock the path; returns cached tokens.
        With a host tier, a host continuation of at least ``LOAD_BACK_THRESHOLD_TOKENS`` that
        fits ``load_quota_pages`` (less the pages the lock takes) and the pool is loaded back
        (all or nothing, ``HiRadixCache.load_back``); ``st.load_tokens`` says how much."""
        assert st.node is None and st.own_pages == 0
        blocks = st.req.prompt_blocks[: st.whole_blocks]
        cache = self.cache
        node, matched = cache.match(blocks, st.req.priority, st.req.owner)
        evictable_before = cache.evictable_blocks
        cache.lock(node)
        st.load_tokens = 0
        host = self.host
        if host is not None:
            host.device_hit(blocks[:matched])
            n = host.match_len(blocks[matched:])
            quota = load_quota_pages - (evictable_before - cache.evictable_blocks)
            if n * self.page_tokens >= LOAD_BACK_THRESHOLD_TOKENS and n <= quota \
                    and self.ensure_free(n) and host.match_len(blocks[matched:matched + n]) == n:
                loaded = blocks[matched:matched + n]
                self.pool.allocate(n)
                new_node, new_blocks = cache.insert(blocks[:matched + n], st.req.priority,
                                                    st.req.owner)
                assert new_blocks == n, "host blocks were already on the device"
                host.load(loaded)
                self.ledger.cached(loaded)
                cache.lock(new_node)
                cache.unlock(node)
                node = new_node
                matched += n
                st.load_tokens = n * self.page_tokens
                self.load_pending_tokens += st.load_tokens
        st.node = node
        st.tree_blocks = matched
        st.kv_tokens = matched * self.page_tokens
        return st.kv_tokens

    def pages_to_grow(self, st: ReqState, tokens: int) -> int:
        own_tokens = st.kv_tokens + tokens - st.tree_blocks * self.page_tokens
        return -(-own_tokens // self.page_tokens) - st.own_pages

    def grow(self, st: ReqState, tokens: int) -> None:
        """Extend the request's KV by ``tokens``; the caller made the pages free."""
        pages = self.pages_to_grow(st, tokens)
        if pages > 0:
            self.pool.allocate(pages)
            st.own_pages += pages
        st.kv_tokens += tokens

    def cache_prompt(self, st: ReqState) -> None:
        """Insert the whole prompt blocks computed so far into the tree (SGLang's
        ``cache_unfinished_req``): their pages pass to the cache (duplicates are freed) and the
        request's lock moves to the new deepest node."""
        n = min(st.kv_tokens // self.page_tokens, st.whole_blocks)
        if n <= st.tree_blocks:
            return
        node, new_blocks = self.cache.insert(st.req.prompt_blocks[:n], st.req.priority,
                                             st.req.owner)
        if new_blocks:
            self.ledger.cached(st.req.prompt_blocks[n - new_blocks:n])
            if self.host is not None:
                self.host.device_hit(st.req.prompt_blocks[n - new_blocks:n])
        moved = n - st.tree_blocks
        duplicates = moved - new_blocks
        st.own_pages -= moved
        if duplicates:
            self.pool.free(duplicates)
        self.cache.lock(node)
        if st.node is not None:
            self.cache.unlock(st.node)
        st.node = node
        st.tree_blocks = n

    def release(self, st: ReqState) -> None:
        """Free the request's own pages and unlock its cached path."""
        if st.node is not None:
            self.cache.unlock(st.node)
        self.pool.free(st.own_pages)
        st.node = None
        st.own_pages = 0
        st.tree_blocks = 0
        st.kv_tokens = 0

    def check(self, states: Iterable[ReqState]) -> None:
        own = sum(s.own_pages for s in states)
        if self.pool.used_pages != self.cache.total_blocks + own:
            raise AssertionError(
                f"KV accounting broken: pool {self.pool.used_pages} pages, cache "
                f"{self.cache.total_blocks} + requests {own}")
        if self.pool.used_pages > self.pool.total_pages:
            raise AssertionError("KV pool over capacity")
