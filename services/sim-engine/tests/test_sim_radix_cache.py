"""Radix cache: matching, splitting, lock accounting, LRU and priority eviction."""

from __future__ import annotations

import pytest

from thunder_sim.engine.radix_cache import RadixCache


def test_match_is_longest_whole_block_prefix_and_splits() -> None:
    c = RadixCache()
    node, new = c.insert((1, 2, 3, 4))
    assert new == 4 and c.total_blocks == 4
    assert c.match_len((1, 2, 9)) == 2
    assert c.match_len((7,)) == 0
    n2, matched = c.match((1, 2, 9))
    assert matched == 2 and n2.keys == (1, 2)        # split: upper part is its own node
    assert node.keys == (3, 4) and node.parent is n2  # the deeper node keeps its identity
    _, new = c.insert((1, 2, 5, 6))
    assert new == 2 and c.total_blocks == 6


def test_lock_protects_path_and_unlock_restores_evictable() -> None:
    c = RadixCache()
    leaf, _ = c.insert((1, 2, 3))
    c.lock(leaf)
    assert c.evictable_blocks == 0 and c.protected_blocks == 3
    assert c.evict(10) == 0
    c.unlock(leaf)
    assert c.evictable_blocks == 3
    assert c.evict(1) == 3                      # whole node, as SGLang evicts
    assert c.total_blocks == 0
    with pytest.raises(RuntimeError):
        c.unlock(leaf)


def test_lru_evicts_least_recently_used_leaf_first() -> None:
    c = RadixCache("lru")
    c.insert((1, 1))
    c.insert((2, 2))
    c.insert((3, 3))
    c.match((1, 1))                              # touch: 2 is now the oldest
    assert c.evict(1) == 2
    assert c.match_len((2, 2)) == 0
    assert c.match_len((1, 1)) == 2 and c.match_len((3, 3)) == 2
    assert c.evict(1) == 2
    assert c.match_len((3, 3)) == 0 and c.match_len((1, 1)) == 2


def test_parent_becomes_evictable_after_its_children() -> None:
    c = RadixCache()
    c.insert((1, 2))
    c.insert((1, 2, 3))
    c.insert((1, 2, 4))
    assert c.evict(100) == 4 and c.total_blocks == 0


def test_priority_eviction_lower_first_lru_among_equals() -> None:
    c = RadixCache("priority")
    c.insert((1,), priority=5)
    c.insert((2,), priority=1)
    c.insert((3,), priority=1)
    c.match((2,), priority=0)                    # priority only rises: stays 1, but touched
    assert c.evict(1) == 1
    assert c.match_len((3,)) == 0                # lowest priority, least recently used
    assert c.evict(1) == 1
    assert c.match_len((2,)) == 0
    assert c.match_len((1,)) == 1                # highest priority survives
    c.match((1,), priority=9)
    c.insert((4,), priority=3)
    assert c.evict(1) == 1 and c.match_len((4,)) == 0


def test_reset_refused_while_locked() -> None:
    c = RadixCache()
    leaf, _ = c.insert((1, 2))
    c.lock(leaf)
    with pytest.raises(RuntimeError):
        c.reset()
    c.unlock(leaf)
    assert c.reset() == 2 and c.total_blocks == 0


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="eviction_policy"):
        RadixCache("fifo")  # type: ignore[arg-type]
