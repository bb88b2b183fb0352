"""Accounting: exact usage, page rounding, estimates, the shared-prefix pool, decay sums."""

from __future__ import annotations

import math

import pytest
from core_harness import Harness
from hypothesis import given
from hypothesis import strategies as st

from thunder_scheduling.accounting import (
    BackendLedger,
    Charge,
    DecayedSum,
    WeightMode,
    ceil_to_page,
    floor_to_page,
)

PAGE_SIZES = [1, 16, 64]


@pytest.mark.parametrize("page", PAGE_SIZES)
def test_estimate_before_first_response_then_exact_usage_rounded_up_to_pages(page: int) -> None:
    h = Harness("sticky", {"a": 100_000}, page_size_tokens=page)
    h.request("p1", 1000)
    row = h.program("p1")
    assert (row.context_tokens, row.tokens_exact) == (1000, False)
    assert h.backend("a").active_tokens == ceil_to_page(1000, page)
    assert h.backend("a").reserved_tokens == ceil_to_page(1000, page)
    h.finish("p1", 1003, 30)
    row = h.program("p1")
    assert (row.context_tokens, row.tokens_exact) == (1033, True)
    assert h.backend("a").active_tokens == ceil_to_page(1033, page)
    assert h.backend("a").reserved_tokens == 0
    # A later, larger estimate raises the charge until the next exact usage.
    h.request("p1", 1500)
    assert h.backend("a").active_tokens == ceil_to_page(1500, page)


@pytest.mark.parametrize("page", PAGE_SIZES)
def test_shared_prefix_is_counted_once_per_backend(page: int) -> None:
    system_prompt = 640
    h = Harness("sticky", {"a": 100_000}, page_size_tokens=page)
    h.request("p1", 1000)
    h.finish("p1", 1000, 100, cached=0)  # the first program puts the prefix there
    own = [ceil_to_page(1100, page)]
    for index, cached in enumerate([system_prompt, system_prompt + 5, system_prompt]):
        pid = f"p{index + 2}"
        h.request(pid, 900)
        h.finish(pid, 900, 50, cached=cached)
        own.append(ceil_to_page(950, page) - floor_to_page(cached, page))
    shared = floor_to_page(system_prompt + 5, page)
    backend = h.backend("a")
    assert backend.shared_prefix_tokens == shared
    # Each program's own part plus the largest shared prefix, once. p1 was first: its
    # prefix is its own charge, so the pool double-counts at most one prefix.
    assert backend.active_tokens == sum(own) + shared
    # Cached tokens on a program's later response are its own KV: no change to the rule.
    h.request("p2", 1000)
    h.finish("p2", 1000, 10, cached=990)
    assert h.backend("a").shared_prefix_tokens == shared
    # The pool shrinks when the programs that share it leave.
    for pid in ("p2", "p3", "p4"):
        h.end(pid)
    assert h.backend("a").shared_prefix_tokens == 0
    assert h.backend("a").active_tokens == ceil_to_page(1100, page)


def test_shared_prefix_rounds_down_to_whole_pages() -> None:
    h = Harness("sticky", {"a": 100_000}, page_size_tokens=64)
    h.request("p1", 100)
    h.finish("p1", 100, 10, cached=0)
    h.request("p2", 200)
    h.finish("p2", 200, 10, cached=100)  # 1 whole page of 64 is shared
    assert h.backend("a").shared_prefix_tokens == 64
    assert h.backend("a").active_tokens == ceil_to_page(110, 64) + (ceil_to_page(210, 64) - 64) + 64


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "value"]),
            st.integers(0, 9),
            st.integers(0, 100_000),
            st.floats(0, 5.0),
        ),
        max_size=60,
    ),
    st.sampled_from([0.5, 1.0, 30.0]),
)
def test_decayed_sum_matches_the_naive_sum(
    ops: list[tuple[str, int, int, float]], h: float
) -> None:
    decayed = DecayedSum(h)
    members: dict[str, tuple[int, float]] = {}
    now = 0.0
    for op, key_index, tokens, dt in ops:
        now += dt * 40  # up to 200 s per step: exercises the rebase
        key = f"k{key_index}"
        if op == "add" and key not in members:
            members[key] = (tokens, now)
            decayed.add(key, tokens, now)
        elif op == "remove" and key in members:
            del members[key]
            decayed.remove(key)
        naive = sum(t * 2 ** (-(now - s) / h) for t, s in members.values())
        assert math.isclose(decayed.value(now), naive, rel_tol=1e-9, abs_tol=1e-6)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "mark", "unmark", "readd"]),
            st.integers(0, 5),
            st.integers(0, 5000),
            st.sampled_from(list(WeightMode)),
            st.floats(0, 5.0),
        ),
        max_size=60,
    ),
    st.sampled_from([None, 1.0, 30.0]),
)
def test_marked_and_committed_tokens_match_the_naive_sums(
    ops: list[tuple[str, int, int, WeightMode, float]], h: float | None
) -> None:
    """The incremental marked sums equal the per-program weights summed over marked programs,
    whatever order charges are added, re-added (the scheduler's remove-mark-add), marked and
    unmarked; committed = used - marked."""
    ledger = BackendLedger("a", h)
    now = 0.0
    for op, key_index, tokens, mode, dt in ops:
        now += dt * 10
        key = f"k{key_index}"
        charge = Charge(tokens, mode, now, 0, False)
        if op == "add" and key not in ledger.charges:
            ledger.add(key, charge)
        elif op == "remove" and key in ledger.charges:
            ledger.remove(key)
        elif op == "mark" and key in ledger.charges:
            ledger.mark(key)
        elif op == "unmark":
            ledger.unmark(key)
        elif op == "readd" and key in ledger.charges:
            was_marked = key in ledger.marked
            ledger.remove(key)
            if was_marked:
                ledger.mark(key)
            ledger.add(key, charge)
        weights = {pid: ledger.weight(c, now) for pid, c in ledger.charges.items()}
        marked = sum(weights[pid] for pid in ledger.marked)
        assert set(ledger.marked) <= set(ledger.charges)
        assert math.isclose(ledger.marked_tokens(now), marked, rel_tol=1e-9, abs_tol=1e-6)
        unmarked = sum(w for pid, w in weights.items() if pid not in ledger.marked)
        assert math.isclose(ledger.committed_tokens(now), unmarked, rel_tol=1e-9, abs_tol=1e-6)
