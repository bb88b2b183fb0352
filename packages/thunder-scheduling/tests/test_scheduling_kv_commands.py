"""The core tells the driver where it put a program's KV: ``Pause.kv_tier`` and ``Offload``
(the live service turns them into engine calls: llama.cpp slot save / restore, SGLang session
release; docs/host-tier.md). The choice itself is tested in ``test_scheduling_kv_tiers.py``."""

from __future__ import annotations

from core_harness import Harness
from test_scheduling_kv_tiers import long_tool, shrink_to_pause

from thunder_scheduling.commands import Offload, Pause, Prewarm
from thunder_scheduling.kv_tiers import KvTier


def test_each_pause_says_where_the_programs_kv_went() -> None:
    h = Harness("thunder", {"a": 10_000})
    h.host_update("a", 5_000)
    assert shrink_to_pause(h, ("p1", "p2", "p3")) == ["p1", "p2"]
    # p1 went to host first, then was pushed out by p2 (its Pause said host at the time)
    assert [(p.program_id, p.kv_tier) for p in h.of(Pause)] == [("p1", KvTier.HOST),
                                                                ("p2", KvTier.HOST)]
    assert h.scheduler.host_used_tokens("a") == 2_000


def test_without_a_host_tier_pauses_say_gone() -> None:
    h = Harness("thunder", {"a": 10_000})
    shrink_to_pause(h, ("p1", "p2", "p3"))
    assert {p.kv_tier for p in h.of(Pause)} == {KvTier.GONE}


def test_a_long_call_offloaded_to_host_is_one_offload_then_one_prewarm() -> None:
    h = Harness("thunder", {"a": 100_000})
    h.host_update("a", 300_000)
    long_tool(h, "p1", 40_000, tool_s=60.0)
    (offload,) = h.of(Offload)
    assert (offload.program_id, offload.backend, offload.context_tokens) == ("p1", "a", 40_100)
    h.tick(59.0)
    assert [c.program_id for c in h.of(Prewarm)] == ["p1"]
    assert len(h.of(Offload)) == 1


def test_no_offload_without_a_host_tier() -> None:
    h = Harness("thunder", {"a": 100_000})
    long_tool(h, "p1", 40_000, tool_s=60.0)
    assert not h.of(Offload)
