"""Per-request state the engine keeps while a request waits, prefills or decodes.

KV accounting of one request, in tokens (``P`` = page size):
- ``kv_tokens``: tokens whose KV the request currently has (cached prefix + computed);
- ``tree_blocks``: leading whole prompt blocks held by the radix cache on the request's locked
  path (``node``); those pages belong to the cache;
- ``own_pages``: pages the request owns: ``ceil((kv_tokens - tree_blocks * P) / P)``.
Decoding follows SGLang: the prefill samples the first output token; each decode iteration
writes the KV of the previous token and samples the next, so after ``n`` output tokens the KV
holds ``prompt + n - 1`` tokens (SGLang's ``kv_committed_len``).
"""

from __future__ import annotations

from thunder_sim.engine.radix_cache import RadixNode
from thunder_sim.engine.types import EngineRequest


class ReqState:
    __slots__ = (
        "admissions",
        "cached_tokens",
        "first_token_s",
        "kv_tokens",
        "load_tokens",
        "miss_tokens",
        "node",
        "output_tokens",
        "own_pages",
        "recomputed_tokens",
        "req",
        "retractions",
        "rid",
        "seq",
        "target_tokens",
        "tree_blocks",
        "whole_blocks",
    )

    def __init__(self, req: EngineRequest, page_tokens: int, seq: int) -> None:
        self.req = req
        self.rid = req.rid
        self.whole_blocks = req.prompt_tokens // page_tokens   # only whole blocks are cached
        self.output_tokens = 0
        self.kv_tokens = 0
        self.target_tokens = 0          # KV tokens the current prefill must reach
        self.node: RadixNode | None = None
        self.tree_blocks = 0
        self.own_pages = 0
        self.cached_tokens = 0          # radix match at the last admission
        self.load_tokens = 0            # of which loaded back from the host tier (HiCache)
        self.recomputed_tokens = 0
        self.retractions = 0
        self.first_token_s: float | None = None
        self.seq = seq                  # arrival order (SGLang's wait_queue_entry_time)
        self.admissions = 0
        self.miss_tokens: dict[str, int] = {}   # recompute ledger of the last admission

    @property
    def remaining_new_tokens(self) -> int:
        return self.req.max_new_tokens - self.output_tokens

    @property
    def prefill_done(self) -> bool:
        return self.kv_tokens >= self.target_tokens
