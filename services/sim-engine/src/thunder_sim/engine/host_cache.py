"""HiCache's host tier: a second KV pool in host memory behind the radix cache (SGLang 0.5.x).

What it models (read in ``sglang/srt/mem_cache/hiradix_cache.py``,
``managers/cache_controller.py``, ``mem_cache/memory_pool_host.py``, ``server_args.py``):

- Size (``HostKVCache.__init__``): ``--hicache-size`` GB > 0 gives
  ``size_gb * 1e9 // kv_bytes_per_token`` tokens, else ``device_pool_tokens * --hicache-ratio``
  (default 2.0); then aligned *up* to a page (``size // page + 1`` pages). See
  ``host_pool_tokens``.
- Write policies (``HiRadixCache.inc_hit_count`` / ``evict``): ``write_through`` backs a
  device node up to host on its first hit (``write_through_threshold`` 1, so at insertion);
  ``write_through_selective`` once it has been hit 3 times (threshold 3); ``write_back`` never
  on a hit, only when the node is evicted from the device. A backup that finds the host pool
  full first evicts host LRU (``evict_host``); if there is still no room the node is not backed
  up (``write_backup`` returns 0) and device eviction drops it.
- Device eviction of a backed-up node keeps it in host (``_evict_backuped``); of a node never
  backed up drops it (``_evict_regular``).
- Host eviction (``evict_host``) takes only nodes no longer on the device, LRU first.
- A prefix match continues into host-only nodes (``match_prefix`` returns ``host_hit_length``);
  the admission loads them back (``init_load_back``/``load_back``): all or nothing, skipped
  when fewer than ``load_back_threshold`` (10) tokens or beyond the memory quota; loading
  allocates device pages, evicting device cache if needed.
- The load runs layer by layer on its own stream while the forward runs
  (``LayerDoneCounter``: layer ``i``'s attention waits for layer ``i``'s load), so a prefill
  with ``load_s`` of transfer and ``compute_s`` of compute takes
  ``max(compute_s, load_s) + min(compute_s, load_s) / num_layers`` (``overlapped_time_s``):
  the exposed part is one layer's worth of the shorter of the two.

Differences (all at the simulator's granularity, a block of ``page_tokens`` tokens):
- The host tier is kept per block key (block keys of a trace name a whole prefix), not per
  tree node; host LRU is refreshed deepest block first so ancestors are always more recent
  than their descendants and eviction takes the deepest blocks first, as SGLang's leaf-first
  ``evict_host`` does.
- Backups and their completion acks are instantaneous (SGLang writes on a side stream and
  locks the node until the ack, ``writing_check``); write-back's blocking wait at eviction is
  not charged. Only load-back time is charged, to the prefill that needs it.
- Hit counts for ``write_through_selective`` count insertions and admissions' matches per
  block (SGLang counts per node in ``_insert_helper`` and ``match_prefix``).
- No third (storage) tier.

Cost: O(blocks) dict operations per backup, eviction and load, all in C loops.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

WritePolicy = Literal["write_through", "write_back", "write_through_selective"]
WRITE_POLICIES: tuple[WritePolicy, ...] = ("write_through", "write_back",
                                           "write_through_selective")
LOAD_BACK_THRESHOLD_TOKENS = 10      # HiRadixCache.load_back_threshold
SELECTIVE_THRESHOLD_HITS = 3          # write_through_threshold unless write_through


def host_pool_tokens(device_pool_tokens: int, page_tokens: int, ratio: float, size_gb: int,
                     kv_bytes_per_token: int) -> int:
    """SGLang's host pool size in tokens (``HostKVCache.__init__``)."""
    if size_gb > 0:
        if kv_bytes_per_token <= 0:
            raise ValueError("--hicache-size needs the model's KV bytes per token")
        size = int(size_gb * 1e9 // kv_bytes_per_token)
    else:
        size = int(device_pool_tokens * ratio)
    return (size // page_tokens + 1) * page_tokens


def overlapped_time_s(compute_s: float, load_s: float, num_layers: int) -> float:
    """A forward whose layer ``i`` waits for layer ``i`` of a layer-wise load-back."""
    if load_s <= 0:
        return compute_s
    return max(compute_s, load_s) + min(compute_s, load_s) / max(num_layers, 1)


class HostCache:
    """Host copies of device blocks: ``_on_device`` (also on the device: not evictable here)
    and ``_lru`` (host only, oldest first). ``capacity_blocks`` bounds their sum."""

    __slots__ = ("_hits", "_lru", "_on_device", "backup_tokens", "capacity_blocks",
                 "load_back_tokens", "page_tokens", "policy")

    def __init__(self, capacity_tokens: int, page_tokens: int, policy: WritePolicy) -> None:
        if policy not in WRITE_POLICIES:
            raise ValueError(f"hicache write policy must be one of {WRITE_POLICIES}, "
                             f"got {policy!r}")
        self.page_tokens = page_tokens
        self.capacity_blocks = capacity_tokens // page_tokens
        self.policy: WritePolicy = policy
        self._on_device: set[int] = set()
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._hits: dict[int, int] = {}
        self.backup_tokens = 0           # written device -> host
        self.load_back_tokens = 0        # loaded host -> device

    # ------------------------------------------------------------------ queries

    @property
    def used_blocks(self) -> int:
        return len(self._on_device) + len(self._lru)

    @property
    def used_tokens(self) -> int:
        return self.used_blocks * self.page_tokens

    @property
    def capacity_tokens(self) -> int:
        return self.capacity_blocks * self.page_tokens

    def match_len(self, blocks: Sequence[int]) -> int:
        """Leading blocks of ``blocks`` held in host only (the continuation of a device match)."""
        lru = self._lru
        n = 0
        for b in blocks:
            if b not in lru:
                break
            n += 1
        return n

    # ------------------------------------------------------------------ device hooks

    def device_hit(self, blocks: Sequence[int]) -> None:
        """Blocks inserted into or matched on the device (``inc_hit_count``)."""
        on_dev = self._on_device
        todo = [b for b in blocks if b not in on_dev]
        if not todo:
            return
        lru = self._lru
        back = [b for b in todo if b in lru]
        if back:            # recomputed while a host copy existed (load-back was skipped)
            for b in back:
                del lru[b]
            on_dev.update(back)
            todo = [b for b in todo if b not in on_dev]
        if self.policy == "write_back" or not todo:
            return
        threshold = 1 if self.policy == "write_through" else SELECTIVE_THRESHOLD_HITS
        if threshold > 1:
            hits = self._hits
            ready = []
            for b in todo:
                h = hits.get(b, 0) + 1
                if h >= threshold:
                    ready.append(b)
                    hits.pop(b, None)
                else:
                    hits[b] = h
            todo = ready
        if todo:
            self._backup(todo, on_device=True)

    def device_evicted(self, blocks: Sequence[int]) -> None:
        """The device dropped ``blocks``: backed-up ones stay here (``_evict_backuped``);
        with write-back, the others are written now (``evict`` with write_back)."""
        on_dev = self._on_device
        lost = [b for b in blocks if b not in on_dev]
        for b in blocks:
            self._hits.pop(b, None)
        if self.policy == "write_back" and lost:
            self._backup(lost, on_device=False)
        # deepest first, so ancestors end more recent (leaf-first host eviction)
        for b in reversed(blocks):
            if b in on_dev:
                on_dev.discard(b)
                self._lru[b] = None
                self._lru.move_to_end(b)

    def load(self, blocks: Sequence[int]) -> None:
        """``blocks`` (host only) were loaded back to the device."""
        lru = self._lru
        for b in blocks:
            del lru[b]
        self._on_device.update(blocks)
        self.load_back_tokens += len(blocks) * self.page_tokens

    def clear(self) -> None:
        self._on_device.clear()
        self._lru.clear()
        self._hits.clear()

    # ------------------------------------------------------------------ internals

    def _backup(self, blocks: list[int], on_device: bool) -> None:
        new = [b for b in blocks if b not in self._lru and b not in self._on_device]
        short = self.used_blocks + len(new) - self.capacity_blocks
        if short > 0:
            self._evict(short)
        if self.used_blocks + len(new) > self.capacity_blocks:
            return                        # write_backup found no room: not backed up
        if on_device:
            self._on_device.update(new)
        else:
            for b in reversed(new):
                self._lru[b] = None
        self.backup_tokens += len(new) * self.page_tokens

    def _evict(self, num_blocks: int) -> int:
        lru = self._lru
        n = min(num_blocks, len(lru))
        for _ in range(n):
            lru.popitem(last=False)
        return n
