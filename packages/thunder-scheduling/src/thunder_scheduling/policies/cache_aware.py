"""cache_aware: a re-implementation of the SGLang router's ``cache_aware`` policy (a baseline).

Ported from sgl-project/sglang ``sgl-router/src/policies/cache_aware.rs`` and
``sgl-router/src/tree.rs`` (sglang-router 0.3.x, now ``smg``), read for this port:

Algorithm, per request (``select``):

1. Loads are the workers' in-flight request counts (the router increments a worker's load when
   it routes a request there and decrements it when the response completes). The system is
   *imbalanced* when ``max_load - min_load > balance_abs_threshold`` AND
   ``max_load > balance_rel_threshold * min_load``.
2. Imbalanced: route to the least-loaded healthy worker, and still insert the request's prefix
   into the tree under that worker.
3. Balanced: find the longest prefix match of the request in the shared approximate tree.
   ``match_rate = matched / request length``. If ``match_rate > cache_threshold``, route to the
   worker that owns the deepest matched node; otherwise route to the worker with the smallest
   tree (the "most available cache"). Then insert the request under the chosen worker.
4. Every ``eviction_interval_s`` the tree is pruned: a worker whose tree is larger than
   ``max_tree_size`` loses its least-recently-used leaves until it fits.

Defaults (``sglang_router/router_args.py``, the CLI's defaults, which the router runs with):
``cache_threshold = 0.3``, ``balance_abs_threshold = 64``, ``balance_rel_threshold = 1.5``,
``eviction_interval_secs = 60`` (sgl-model-gateway's ``router_args.py``; older sglang-router
releases used 120), ``max_tree_size = 2**26``. (The Rust ``CacheAwareConfig::default()`` holds
other numbers, 0.5 / 32 / 1.1 / 30 / 10000, but the launcher always passes the CLI values.)

Differences from the Rust router, all forced by what the scheduler sees and documented here:

- The router's tree is over request *characters*; ours is over the request's prefix
  fingerprint (``RequestArrived.prompt_blocks``: chained block keys, so a node is a block).
  Sizes and match rates are in blocks; ``max_tree_size`` is converted from characters to blocks
  at 4 characters per token (OpenAI's rule of thumb for English text) and ``block_tokens``
  tokens per block: ``2**26 / 4 / 64 = 262,144`` blocks with 64-token blocks.
- The Rust tree picks "the first tenant" of the deepest matched node from a concurrent hash
  map (an arbitrary one). We pick the tenant that touched that node most recently (ties by
  name), which is deterministic; with one owner per prefix, as in agent traffic, they agree.
- Timestamps are the core's event time, not wall-clock milliseconds.
- A request without a fingerprint has match rate 0 (the router's empty-text case).

The policy knows nothing of programs: it never holds, pauses or resumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from thunder_scheduling.events import RequestArrived
from thunder_scheduling.policy import BasePolicy, PolicyView
from thunder_scheduling.program_table import Program

CHARS_PER_TOKEN = 4
"""OpenAI tokenizer rule of thumb ("one token is about 4 characters of English text")."""


@dataclass(frozen=True, slots=True)
class CacheAwareConfig:
    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    eviction_interval_s: float = 60.0
    max_tree_size_chars: int = 2**26
    block_tokens: int = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {self.cache_threshold!r}")
        if self.balance_abs_threshold < 0:
            raise ValueError("balance_abs_threshold must be >= 0")
        if self.balance_rel_threshold < 1.0:
            raise ValueError("balance_rel_threshold must be >= 1")
        if self.eviction_interval_s <= 0:
            raise ValueError("eviction_interval_s must be > 0")
        if self.max_tree_size_chars <= 0 or self.block_tokens <= 0:
            raise ValueError("max_tree_size_chars and block_tokens must be > 0")

    @property
    def max_tree_size_blocks(self) -> int:
        return max(1, self.max_tree_size_chars // (CHARS_PER_TOKEN * self.block_tokens))


@dataclass(slots=True)
class _Node:
    parent: int | None
    children: set[int] = field(default_factory=set)
    tenants: dict[str, float] = field(default_factory=dict)   # tenant -> last access time


class ApproxPrefixTree:
    """The router's multi-tenant approximate radix tree, over prefix-unique block keys.

    Because a block key identifies its whole prefix, node ``k`` is the path ending in block
    ``k`` and its parent is the previous block: a dict of nodes is the tree.
    """

    def __init__(self) -> None:
        self._nodes: dict[int, _Node] = {}
        self.size_blocks: dict[str, int] = {}

    def add_tenant(self, tenant: str) -> None:
        self.size_blocks.setdefault(tenant, 0)

    def remove_tenant(self, tenant: str) -> None:
        for key in [k for k, n in self._nodes.items() if tenant in n.tenants]:
            self._drop(key, tenant)
        self.size_blocks.pop(tenant, None)

    def insert(self, blocks: Sequence[int], tenant: str, at: float) -> None:
        self.add_tenant(tenant)
        parent: int | None = None
        nodes = self._nodes
        added = 0
        for key in blocks:
            node = nodes.get(key)
            if node is None:
                node = _Node(parent)
                nodes[key] = node
                if parent is not None:
                    nodes[parent].children.add(key)
            if tenant not in node.tenants:
                added += 1
            node.tenants[tenant] = at
            parent = key
        self.size_blocks[tenant] += added

    def prefix_match(self, blocks: Sequence[int], at: float) -> tuple[int, str | None]:
        """(matched blocks, owner of the deepest matched node); refreshes the owner's path."""
        nodes = self._nodes
        matched = 0
        last: _Node | None = None
        for key in blocks:
            node = nodes.get(key)
            if node is None or not node.tenants:
                break
            matched += 1
            last = node
        if last is None:
            return 0, None
        owner = max(last.tenants.items(), key=lambda kv: (kv[1], kv[0]))[0]
        for key in blocks[:matched]:
            nodes[key].tenants[owner] = at
        return matched, owner

    def smallest_tenant(self, candidates: Iterable[str]) -> str:
        return min(candidates, key=lambda t: (self.size_blocks.get(t, 0), t))

    def evict_to(self, max_blocks: int) -> int:
        """Drop each over-size tenant's least recently used leaves; returns blocks dropped."""
        dropped = 0
        for tenant, size in list(self.size_blocks.items()):
            if size <= max_blocks:
                continue
            leaves = [
                (n.tenants[tenant], k) for k, n in self._nodes.items()
                if tenant in n.tenants
                and not any(tenant in self._nodes[c].tenants for c in n.children)
            ]
            leaves.sort()
            while self.size_blocks[tenant] > max_blocks and leaves:
                _, key = leaves.pop(0)
                parent = self._nodes[key].parent
                self._drop(key, tenant)
                dropped += 1
                if parent is not None:
                    pnode = self._nodes[parent]
                    if not any(tenant in self._nodes[c].tenants for c in pnode.children):
                        leaves.append((pnode.tenants[tenant], parent))
                        leaves.sort()
        return dropped

    def _drop(self, key: int, tenant: str) -> None:
        node = self._nodes[key]
        if node.tenants.pop(tenant, None) is not None:
            self.size_blocks[tenant] -= 1
        if not node.tenants and not node.children:
            del self._nodes[key]
            if node.parent is not None and node.parent in self._nodes:
                self._nodes[node.parent].children.discard(key)


class CacheAwareRouter:
    """The routing decision itself, independent of the scheduler's policy protocol."""

    def __init__(self, config: CacheAwareConfig | None = None) -> None:
        self.config = config or CacheAwareConfig()
        self.tree = ApproxPrefixTree()
        self.load: dict[str, int] = {}
        self._next_eviction_at: float | None = None

    def add_worker(self, name: str) -> None:
        self.load.setdefault(name, 0)
        self.tree.add_tenant(name)

    def remove_worker(self, name: str) -> None:
        self.load.pop(name, None)
        self.tree.remove_tenant(name)

    def select(
        self, healthy: Sequence[str], blocks: Sequence[int], at: float, count_load: bool = True
    ) -> str | None:
        """Pick a worker for a request with prefix ``blocks``; count it in that worker's load
        (``count_load``) until ``completed`` is called for it."""
        if not healthy:
            return None
        self.maybe_evict(at)
        cfg = self.config
        loads = [self.load.get(w, 0) for w in self.load] or [0]
        max_load, min_load = max(loads), min(loads)
        imbalanced = (
            max_load - min_load > cfg.balance_abs_threshold
            and max_load > min_load * cfg.balance_rel_threshold
        )
        if imbalanced:
            chosen = min(healthy, key=lambda w: (self.load.get(w, 0), w))
        else:
            matched, owner = self.tree.prefix_match(blocks, at)
            rate = matched / len(blocks) if blocks else 0.0
            if rate > cfg.cache_threshold and owner is not None and owner in healthy:
                chosen = owner
            else:
                chosen = self.tree.smallest_tenant(healthy)
        if blocks:
            self.tree.insert(blocks, chosen, at)
        if count_load:
            self.load[chosen] = self.load.get(chosen, 0) + 1
        return chosen

    def completed(self, worker: str) -> None:
        if self.load.get(worker, 0) > 0:
            self.load[worker] -= 1

    def maybe_evict(self, at: float) -> None:
        if self._next_eviction_at is None:
            self._next_eviction_at = at + self.config.eviction_interval_s
        elif at >= self._next_eviction_at:
            self.tree.evict_to(self.config.max_tree_size_blocks)
            self._next_eviction_at = at + self.config.eviction_interval_s


class CacheAwarePolicy(BasePolicy):
    """The router above behind the scheduler's policy hooks (request-level routing).

    ``route_request`` is the router's ``select_worker``; ``request_finished`` is its
    ``on_request_complete`` load decrement. ``place`` (program-level, used when a scheduler
    does not route per request) routes on the program's first request the same way.
    """

    name = "cache_aware"
    pauses = False
    routes_requests = True
    reads_prompt_blocks = True

    def __init__(self, config: CacheAwareConfig | None = None) -> None:
        self.config = config or CacheAwareConfig()
        self.router = CacheAwareRouter(self.config)
        self._routed: dict[tuple[str, str], str] = {}

    def _select(
        self, view: PolicyView, blocks: Sequence[int], count_load: bool = True
    ) -> str | None:
        for name in view.backends():
            self.router.add_worker(name)
        healthy = [ledger.name for ledger in view.healthy()]
        return self.router.select(healthy, blocks, view.now, count_load)

    def place(self, program: Program, view: PolicyView) -> str | None:
        # Program-level placement carries no prompt: the router's empty-text case.
        return self._select(view, (), count_load=False)

    def route_request(
        self, program: Program, request: RequestArrived, view: PolicyView
    ) -> str | None:
        chosen = self._select(view, request.prompt_blocks)
        if chosen is not None:
            self._routed[(request.program_id, request.request_id)] = chosen
        return chosen

    def backend_flushed(self, backend: str) -> None:
        """The worker's tree goes (its engine holds none of those prefixes any more); the
        worker stays known, with its load."""
        self.router.tree.remove_tenant(backend)
        self.router.tree.add_tenant(backend)

    def request_finished(self, program_id: str, request_id: str) -> None:
        worker = self._routed.pop((program_id, request_id), None)
        if worker is not None:
            self.router.completed(worker)


__all__ = [
    "ApproxPrefixTree",
    "CacheAwareConfig",
    "CacheAwarePolicy",
    "CacheAwareRouter",
]
