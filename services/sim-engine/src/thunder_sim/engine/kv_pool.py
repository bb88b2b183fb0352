"""The KV pool: C tokens in pages of ``page_tokens`` (SGLang's ``--page-size``).

Only page counts matter to the model, so the pool is a counter with hard checks: allocation
beyond capacity raises (the engine must evict or retract first), freeing more than was
allocated raises. Pages are owned either by the radix cache (whole prompt blocks) or by a
running request (its uncached tail and its output); the engine moves ownership, the pool only
counts. O(1) per call.
"""

from __future__ import annotations


class KVPoolExhausted(RuntimeError):
    """An allocation asked for more pages than are free (a bug in the caller's checks)."""


class KVPool:
    __slots__ = ("_used_pages", "page_tokens", "total_pages")

    def __init__(self, capacity_tokens: int, page_tokens: int) -> None:
        if page_tokens < 1:
            raise ValueError("page_tokens must be >= 1")
        if capacity_tokens < page_tokens:
            raise ValueError(
                f"capacity_tokens ({capacity_tokens}) must hold one page ({page_tokens})")
        self.page_tokens = page_tokens
        self.total_pages = capacity_tokens // page_tokens
        self._used_pages = 0

    @property
    def capacity_tokens(self) -> int:
        return self.total_pages * self.page_tokens

    @property
    def used_pages(self) -> int:
        return self._used_pages

    @property
    def free_pages(self) -> int:
        return self.total_pages - self._used_pages

    @property
    def used_tokens(self) -> int:
        return self._used_pages * self.page_tokens

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_tokens)

    def allocate(self, pages: int) -> None:
        if pages < 0:
            raise ValueError("pages must be >= 0")
        if pages > self.free_pages:
            raise KVPoolExhausted(f"asked for {pages} pages, {self.free_pages} free")
        self._used_pages += pages

    def free(self, pages: int) -> None:
        if pages < 0 or pages > self._used_pages:
            raise ValueError(f"cannot free {pages} pages, {self._used_pages} in use")
        self._used_pages -= pages
