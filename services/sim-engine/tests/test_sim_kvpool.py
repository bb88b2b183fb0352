"""KV pool: page accounting never exceeds capacity."""

from __future__ import annotations

import pytest

from thunder_sim.engine.kv_pool import KVPool, KVPoolExhausted


def test_capacity_is_whole_pages_and_allocation_is_bounded() -> None:
    pool = KVPool(capacity_tokens=1000, page_tokens=64)
    assert pool.total_pages == 15 and pool.capacity_tokens == 960
    assert pool.pages_for(65) == 2
    pool.allocate(15)
    assert pool.free_pages == 0 and pool.used_tokens == 960
    with pytest.raises(KVPoolExhausted):
        pool.allocate(1)
    pool.free(5)
    assert pool.free_pages == 5
    with pytest.raises(ValueError):
        pool.free(11)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        KVPool(capacity_tokens=10, page_tokens=64)
    with pytest.raises(ValueError):
        KVPool(capacity_tokens=100, page_tokens=0)
