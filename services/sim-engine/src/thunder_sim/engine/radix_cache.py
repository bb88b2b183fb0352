"""Radix prefix cache over block keys, a port of SGLang's ``RadixCache`` at page granularity.

What it ports (``sglang/srt/mem_cache/radix_cache.py`` and ``evict_policy.py``, 0.5.23):

- A compressed trie: each node holds a run of block keys (one block = one KV page) and its
  children are keyed by their first block. ``match`` walks from the root comparing runs; when
  a prompt diverges inside a run the node is split so the matched part is its own node (the new
  node takes the *upper* part, so a request holding the deeper node keeps a valid reference, as
  ``_split_node`` does). Only whole blocks are ever cached.
- Reference counts (``lock_ref``): locking a node locks its whole path to the root
  (``inc_lock_ref``); ``evictable_blocks`` counts blocks on unlocked nodes, ``protected_blocks``
  the rest.
- Eviction takes unlocked *leaves* in priority order and removes whole nodes (so it may evict
  more than asked, as SGLang does); a parent that becomes an unlocked leaf joins the queue.
  Orders: ``lru`` (``LRUStrategy``: oldest ``last_access`` first) and ``priority``
  (``PriorityStrategy``: ``(priority, last_access)``, lower first; a node's priority is the
  maximum priority of the requests that matched or inserted through it, so it only rises).

For the recompute ledger (``ledger.py``) each node also remembers its *owner* (the program of
the last request that matched or inserted through it) and an optional ``on_evict`` listener
hears every evicted node's blocks and owner; neither changes what is evicted.

Differences: SGLang stamps ``last_access_time`` with the wall clock; here an access counter
gives the same order without reading a clock. SGLang heapifies all evictable leaves on every
``evict`` call; here a lazy heap (stale entries skipped) keeps eviction O(log n) per node.
Costs: ``match``/``insert`` are O(path nodes) Python steps plus C-speed tuple comparisons of the
runs, never per token.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Literal

EvictionPolicy = Literal["lru", "priority"]


class RadixNode:
    __slots__ = (
        "alive", "children", "keys", "last_access", "lock_ref", "node_id", "owner", "parent",
        "priority",
    )

    def __init__(self, keys: tuple[int, ...], parent: RadixNode | None, node_id: int,
                 last_access: int, priority: int) -> None:
        self.keys = keys
        self.parent = parent
        self.children: dict[int, RadixNode] = {}
        self.lock_ref = 0
        self.last_access = last_access
        self.priority = priority
        self.alive = True
        self.node_id = node_id
        self.owner: str | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.keys)


class RadixCache:
    def __init__(self, eviction_policy: EvictionPolicy = "lru") -> None:
        if eviction_policy not in ("lru", "priority"):
            raise ValueError(
                f"eviction_policy must be 'lru' or 'priority', got {eviction_policy!r}")
        self.eviction_policy: EvictionPolicy = eviction_policy
        self._next_id = 1
        self._access = 0
        self.root = RadixNode((), None, 0, 0, 0)
        self.root.lock_ref = 1            # the root is never evicted
        self.total_blocks = 0
        self.evictable_blocks = 0
        self._heap: list[tuple[int, int, int, RadixNode]] = []
        self.version = 0                  # bumped whenever the set of cached blocks changes
        self.on_evict: Callable[[tuple[int, ...], str | None], None] | None = None

    # ---------------------------------------------------------------- queries

    @property
    def protected_blocks(self) -> int:
        return self.total_blocks - self.evictable_blocks

    def match_len(self, blocks: tuple[int, ...]) -> int:
        """Leading blocks of ``blocks`` present in the tree; changes nothing."""
        _node, i, _child, j = self._walk(blocks)
        return i + j

    # ---------------------------------------------------------------- mutation

    def match(self, blocks: tuple[int, ...], priority: int = 0,
              owner: str | None = None) -> tuple[RadixNode, int]:
        """Longest cached prefix: ``(deepest node, matched blocks)``; splits a partially
        matched node and refreshes access time, priority and owner along the path."""
        node, i, child, j = self._walk(blocks)
        if child is not None:
            node = self._split(child, j)
            i += j
        self._touch(node, priority, owner)
        return node, i

    def insert(self, blocks: tuple[int, ...], priority: int = 0,
               owner: str | None = None) -> tuple[RadixNode, int]:
        """Insert ``blocks`` (whole blocks only); returns ``(deepest node, new blocks)``."""
        node, matched = self.match(blocks, priority, owner)
        if matched == len(blocks):
            return node, 0
        keys = blocks[matched:]
        self._access += 1
        child = RadixNode(keys, node, self._next_id, self._access, priority)
        child.owner = owner
        self._next_id += 1
        node.children[keys[0]] = child
        self.version += 1
        self.total_blocks += len(keys)
        self.evictable_blocks += len(keys)
        self._push(child)
        return child, len(keys)

    def lock(self, node: RadixNode) -> None:
        """``inc_lock_ref``: protect ``node`` and its ancestors from eviction."""
        n: RadixNode | None = node
        while n is not None and n is not self.root:
            if n.lock_ref == 0:
                self.evictable_blocks -= len(n.keys)
            n.lock_ref += 1
            n = n.parent

    def unlock(self, node: RadixNode) -> None:
        """``dec_lock_ref``: undo one ``lock(node)``."""
        n: RadixNode | None = node
        while n is not None and n is not self.root:
            if n.lock_ref <= 0:
                raise RuntimeError("unlock of an unlocked radix node")
            n.lock_ref -= 1
            if n.lock_ref == 0:
                self.evictable_blocks += len(n.keys)
                if not n.children:
                    self._push(n)
            n = n.parent

    def evict(self, num_blocks: int) -> int:
        """Evict unlocked leaves in policy order until ``num_blocks`` are freed (whole nodes, so
        possibly more); returns the blocks freed."""
        freed = 0
        heap = self._heap
        while freed < num_blocks and heap:
            prio, access, _nid, node = heapq.heappop(heap)
            if (not node.alive or node.lock_ref or node.children or access != node.last_access
                    or prio != self._heap_priority(node)):
                continue
            freed += self._delete_leaf(node)
            parent = node.parent
            if parent is not None and parent is not self.root and not parent.children \
                    and parent.lock_ref == 0:
                self._push(parent)
        return freed

    def reset(self) -> int:
        """Drop every node (``flush_cache``); refuses while anything is locked."""
        if self.protected_blocks:
            raise RuntimeError("cannot reset a radix cache with locked nodes")
        freed = self.total_blocks
        self.root.children = {}
        self.total_blocks = 0
        self.evictable_blocks = 0
        self._heap = []
        self.version += 1
        return freed

    # ---------------------------------------------------------------- internals

    def _walk(self, blocks: tuple[int, ...]) -> tuple[RadixNode, int, RadixNode | None, int]:
        node = self.root
        i = 0
        n = len(blocks)
        while i < n:
            child = node.children.get(blocks[i])
            if child is None:
                break
            keys = child.keys
            size = len(keys)
            if blocks[i:i + size] == keys:
                node = child
                i += size
                continue
            j = 1
            limit = min(size, n - i)
            while j < limit and keys[j] == blocks[i + j]:
                j += 1
            return node, i, child, j
        return node, i, None, 0

    def _split(self, child: RadixNode, j: int) -> RadixNode:
        """Split ``child`` after ``j`` blocks; the new upper node is returned."""
        parent = child.parent
        assert parent is not None
        upper = RadixNode(child.keys[:j], parent, self._next_id, child.last_access, child.priority)
        self._next_id += 1
        upper.lock_ref = child.lock_ref
        upper.owner = child.owner
        child.keys = child.keys[j:]
        child.parent = upper
        upper.children[child.keys[0]] = child
        parent.children[upper.keys[0]] = upper
        return upper

    def _touch(self, node: RadixNode, priority: int, owner: str | None = None) -> None:
        self._access += 1
        n: RadixNode | None = node
        while n is not None and n is not self.root:
            n.last_access = self._access
            n.priority = max(n.priority, priority)
            if owner is not None:
                n.owner = owner
            if n.lock_ref == 0 and not n.children:
                self._push(n)
            n = n.parent

    def _heap_priority(self, node: RadixNode) -> int:
        return node.priority if self.eviction_policy == "priority" else 0

    def _push(self, node: RadixNode) -> None:
        entry = (self._heap_priority(node), node.last_access, node.node_id, node)
        heapq.heappush(self._heap, entry)

    def _delete_leaf(self, node: RadixNode) -> int:
        parent = node.parent
        assert parent is not None
        del parent.children[node.keys[0]]
        node.alive = False
        self.version += 1
        if self.on_evict is not None:
            self.on_evict(node.keys, node.owner)
        size = len(node.keys)
        self.total_blocks -= size
        self.evictable_blocks -= size
        return size
