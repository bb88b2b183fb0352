"""The baseline policies: round_robin rotation and the SGLang router's cache_aware decisions."""

from __future__ import annotations

from thunder_scheduling.policies import POLICIES
from thunder_scheduling.policies.cache_aware import (
    ApproxPrefixTree,
    CacheAwareConfig,
    CacheAwareRouter,
)


def test_both_baselines_are_registered() -> None:
    assert POLICIES["round_robin"][0].name == "round_robin"
    assert POLICIES["cache_aware"][0].name == "cache_aware"


def test_cache_aware_routes_to_the_longest_match_when_balanced() -> None:
    r = CacheAwareRouter()
    for w in ("a", "b"):
        r.add_worker(w)
    assert r.select(["a", "b"], [1, 2, 3, 4], 0.0) == "a"     # empty trees: smallest, by name
    r.completed("a")
    assert r.select(["a", "b"], [10, 11], 1.0) == "b"         # no match: smallest tree (b)
    r.completed("b")
    assert r.select(["a", "b"], [1, 2, 3, 5], 2.0) == "a"     # 3/4 > 0.3 matched on a
    r.completed("a")
    # 1 of 4 blocks matched (0.25 <= 0.3): goes to the smallest tree instead
    assert r.select(["a", "b"], [1, 20, 21, 22], 3.0) == "b"


def test_cache_aware_balances_when_imbalanced() -> None:
    cfg = CacheAwareConfig()
    r = CacheAwareRouter(cfg)
    for w in ("a", "b"):
        r.add_worker(w)
    for _ in range(cfg.balance_abs_threshold + 1):            # pile load on "a" by affinity
        assert r.select(["a", "b"], [1, 2], 0.0) == "a"
    assert r.load == {"a": 65, "b": 0}
    # 65 - 0 > 64 and 65 > 1.5 * 0: imbalanced, so the least loaded wins despite the match
    assert r.select(["a", "b"], [1, 2], 1.0) == "b"


def test_tree_eviction_drops_lru_leaves_to_the_limit() -> None:
    t = ApproxPrefixTree()
    t.insert([1, 2, 3], "a", 0.0)
    t.insert([1, 2, 9], "a", 5.0)
    assert t.size_blocks["a"] == 4
    t.evict_to(3)
    assert t.size_blocks["a"] == 3
    assert t.prefix_match([1, 2, 3], 6.0) == (2, "a")          # the older leaf went
    assert t.prefix_match([1, 2, 9], 6.0) == (3, "a")


def test_default_thresholds_are_the_routers() -> None:
    cfg = CacheAwareConfig()
    assert (cfg.cache_threshold, cfg.balance_abs_threshold, cfg.balance_rel_threshold,
            cfg.eviction_interval_s, cfg.max_tree_size_chars) == (0.3, 64, 1.5, 60.0, 2**26)
    assert cfg.max_tree_size_blocks == 2**26 // (4 * 64)
