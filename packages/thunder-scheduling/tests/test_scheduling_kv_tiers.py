"""KV tiers (``kv_tiers.py``): the waste of each place, the host budget, where the scheduler
believes each program's KV is, and how thunder, ``infercept`` and ``kvflow`` use it."""

from __future__ import annotations

import pytest
from core_harness import Harness

from thunder_scheduling.commands import Pause, Prewarm
from thunder_scheduling.kv_tiers import KvTier, KvTiers, TierRates, choose_tier, waste

RATES = TierRates(prefill_tokens_per_s=10_000.0, load_tokens_per_s=400_000.0)


def test_waste_picks_device_for_a_short_call_host_for_a_long_one_and_gone_without_host() -> None:
    context, batch = 40_000, 300_000
    # keep: 40k tokens x away; host: 0.1 s x 340k = 34k token-s; gone: 4 s x 340k = 1.36M
    assert waste(KvTier.HOST, context, 0.0, batch, RATES) == pytest.approx(34_000)
    assert waste(KvTier.GONE, context, 0.0, batch, RATES) == pytest.approx(1_360_000)
    assert choose_tier(context, 0.5, batch, RATES, host_room=True) is KvTier.DEVICE
    assert choose_tier(context, 5.0, batch, RATES, host_room=True) is KvTier.HOST
    assert choose_tier(context, 5.0, batch, RATES, host_room=False) is KvTier.DEVICE
    assert choose_tier(context, 60.0, batch, RATES, host_room=False) is KvTier.GONE
    # a backend's own (slower) link moves the break-even: 40k tokens at 10k/s take 4 s
    assert choose_tier(context, 5.0, batch, RATES, True, load_tokens_per_s=10_000.0) is (
        KvTier.DEVICE)


def test_host_budget_is_an_lru_that_pushes_the_oldest_out_and_forgets_ended_programs() -> None:
    tiers = KvTiers(mirrors_device=True)
    assert tiers.configure("a", host_tokens=3_000, load_tokens_per_s=None) == []
    assert tiers.on_device("p0", "a", 1_000) == []
    assert tiers.host_budget("a") == 2_000  # write-through mirrors what is on the device
    assert tiers.to_host("p1", "a", 800) == []
    assert tiers.to_host("p2", "a", 800) == []
    assert tiers.to_host("p3", "a", 800) == ["p1"]  # 2,400 > 2,000: the oldest is gone
    assert [tiers.tier(p) for p in ("p1", "p2", "p3")] == [KvTier.GONE, KvTier.HOST,
                                                           KvTier.HOST]
    assert tiers.on_device("p4", "a", 600) == ["p2"]  # its mirror takes host room too
    tiers.drop("p0")
    assert tiers.on_device("p3", "a", 900) == []  # loaded back: counted on the device
    assert tiers.tier("p3") is KvTier.DEVICE and tiers.host_used("a") == 0
    assert tiers.to_host("p5", "a", 2_500) == []  # larger than the budget: never held
    assert tiers.tier("p5") is KvTier.GONE
    assert set(tiers.flushed("a")) == {"p3", "p4"}
    assert tiers.host_budget("a") == 3_000
    no_mirror = KvTiers(mirrors_device=False)
    no_mirror.configure("b", 3_000, None)
    no_mirror.on_device("p1", "b", 1_000)
    assert no_mirror.host_budget("b") == 3_000


def long_tool(h: Harness, pid: str, tokens: int, tool_s: float) -> None:
    h.request(pid, tokens)
    h.finish(pid, tokens, 100, tool_call=True)
    h.tool_start(pid, f"{pid}-call", "build", expected_duration_s=tool_s)


def shrink_to_pause(h: Harness, pids: tuple[str, ...]) -> list[str]:
    """Each program answers and starts a short call (kept on the device); then the backend
    shrinks to 2,500 tokens and the scheduler pauses all but one. Returns the paused."""
    for index, pid in enumerate(pids):
        h.request(pid, 2_000)
        h.finish(pid, 2_000, 0, tool_call=True)
        h.tool_start(pid, f"c{index}", "ls", expected_duration_s=0.01)
        h.advance(1.0)
    h.backend_update("a", 2_500)
    return [c.program_id for c in h.of(Pause)]


def test_paused_programs_go_to_host_and_fall_out_oldest_first_when_it_is_full() -> None:
    h = Harness("thunder", {"a": 10_000})
    h.host_update("a", 4_500)  # less p3's 2,000 on the device: a host budget of 2,500
    paused = shrink_to_pause(h, ("p1", "p2", "p3"))
    assert paused == ["p1", "p2"]
    assert [h.scheduler.kv_tier(p) for p in paused] == [KvTier.GONE, KvTier.HOST]
    assert h.scheduler.host_used_tokens("a") == 2_000
    h.end("p2")
    assert h.scheduler.kv_tier("p2") is KvTier.GONE
    assert h.scheduler.host_used_tokens("a") == 0


def test_without_a_host_tier_a_paused_program_is_gone() -> None:
    h = Harness("thunder", {"a": 10_000})
    paused = shrink_to_pause(h, ("p1", "p2", "p3"))
    assert paused and all(h.scheduler.kv_tier(p) is KvTier.GONE for p in paused)


def test_thunder_offloads_a_long_call_to_host_and_loads_it_back_before_its_predicted_end() -> None:
    h = Harness("thunder", {"a": 100_000})
    h.host_update("a", 300_000)
    long_tool(h, "p1", 40_000, tool_s=60.0)
    assert h.scheduler.kv_tier("p1") is KvTier.HOST
    assert h.backend("a").committed_tokens == 0  # weighs nothing while offloaded
    h.tick(55.0)
    assert not h.of(Prewarm)
    h.tick(4.0)  # 59 s: within the 2 s lead of the predicted end (60 s)
    (prewarm,) = h.of(Prewarm)
    assert prewarm.program_id == "p1" and prewarm.backend == "a"
    assert h.scheduler.kv_tier("p1") is KvTier.DEVICE
    assert h.backend("a").committed_tokens == pytest.approx(40_100)


def test_thunder_without_a_host_tier_keeps_its_decaying_weight_and_sends_no_prewarm() -> None:
    h = Harness("thunder", {"a": 100_000})
    long_tool(h, "p1", 40_000, tool_s=60.0)
    assert h.backend("a").committed_tokens == pytest.approx(40_100)
    h.tick(59.0)
    assert not h.of(Prewarm)
    assert h.scheduler.kv_tier("p1") is KvTier.DEVICE


def test_thunder_waits_for_the_backend_holding_a_programs_kv_in_host_instead_of_moving() -> None:
    h = Harness("thunder", {"a": 10_000})
    h.host_update("a", 4_500)
    assert shrink_to_pause(h, ("p1", "p2", "p3")) == ["p1", "p2"]  # p1 gone, p2 in host
    h.backend_update("b", 10_000)  # room appears on another backend only
    h.tick(1.0)
    assert h.program("p1").status.value == "active" and h.program("p1").backend == "b"
    assert h.program("p2").status.value == "paused"  # its KV is in a's host: it waits
    h.end("p3")
    h.tick(1.0)
    row = h.program("p2")
    assert row.status.value == "active" and row.backend == "a"


def test_infercept_preserves_a_short_call_and_swaps_a_long_one_without_prefetch() -> None:
    h = Harness("infercept", {"a": 100_000})
    h.host_update("a", 300_000)
    long_tool(h, "short", 20_000, tool_s=0.01)
    assert h.backend("a").committed_tokens == pytest.approx(20_100)  # preserved
    long_tool(h, "long", 40_000, tool_s=60.0)
    assert h.scheduler.kv_tier("long") is KvTier.HOST
    assert h.backend("a").committed_tokens == pytest.approx(20_100)  # swapped: weighs 0
    h.tick(59.5)
    assert not h.of(Prewarm)  # swapped in when its call returns, not ahead


def test_infercept_discards_a_long_call_when_the_host_has_no_room() -> None:
    h = Harness("infercept", {"a": 100_000})
    long_tool(h, "p1", 40_000, tool_s=600.0)
    assert h.scheduler.kv_tier("p1") is KvTier.GONE
    assert h.backend("a").committed_tokens == 0


def test_kvflow_prefetches_from_host_and_pauses_the_latest_return_first() -> None:
    h = Harness("kvflow", {"a": 100_000})
    h.host_update("a", 300_000)
    long_tool(h, "p1", 30_000, tool_s=20.0)
    assert h.scheduler.kv_tier("p1") is KvTier.HOST
    h.tick(18.5)
    assert [p.program_id for p in h.of(Prewarm)] == ["p1"]
    k = Harness("kvflow", {"a": 10_000})
    for pid, tool_s in (("soon", 5.0), ("late", 500.0)):
        long_tool(k, pid, 3_000, tool_s=tool_s)
    k.backend_update("a", 5_000)  # over the pool: the program furthest from running goes
    assert [p.program_id for p in k.of(Pause)] == ["late"]


def test_a_long_waiter_whose_kv_is_gone_is_not_promoted_ahead_of_one_held_in_host() -> None:
    h = Harness("thunder", {"a": 10_000}, max_paused_s=300.0)
    h.host_update("a", 4_500)
    assert shrink_to_pause(h, ("p1", "p2", "p3")) == ["p1", "p2"]  # p1 gone, p2 in host
    h.advance(200.0)  # both past thunder's promotion (150 s), within the aging bound
    h.end("p3")  # room for one
    h.tick(0.0)
    assert h.program("p2").status.value == "active"  # loads back from host
    assert h.program("p1").status.value == "paused"
    h.tick(100.0)  # the aging bound forces p1 back anyway
    assert h.program("p1").status.value == "active"
