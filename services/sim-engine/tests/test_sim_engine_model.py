"""Engine model validity: capacity, cached tokens, roofline latency, retraction, eviction,
abort, flush, sessions, priority, fast-forward."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thunder_sim.costmodel import PrefillChunk, get_preset
from thunder_sim.engine import Engine, EngineConfig, EngineRequest, FinishedRequest, StepResult

PRESET = "h100-qwen3-8b"
P = 64


def make_engine(**overrides: Any) -> Engine:
    overrides.setdefault("kv_pool_tokens", 64 * P)
    return Engine(EngineConfig.from_preset(PRESET, **overrides), get_preset(PRESET).cost_model())


def req(rid: str, base: int, blocks: int, max_new: int, *, tail: int = 0, prefix: int = 0,
        prefix_base: int = 0, **kw: Any) -> EngineRequest:
    """Prompt of ``blocks`` blocks: ``prefix`` shared blocks keyed by ``prefix_base``, then
    blocks unique to ``base``; ``tail`` tokens short of whole (partial last block)."""
    keys = tuple(prefix_base * 1_000_000 + i for i in range(prefix))
    keys += tuple(base * 1_000_000 + 500_000 + i for i in range(blocks - prefix))
    return EngineRequest(rid, keys, blocks * P - tail, max_new, **kw)


def run(engine: Engine, now: float = 0.0, max_decode_steps: int = 1,
        check: bool = True) -> tuple[float, list[FinishedRequest], list[StepResult]]:
    finished: list[FinishedRequest] = []
    steps: list[StepResult] = []
    while engine.has_work():
        r = engine.step(now, max_decode_steps=max_decode_steps)
        if check:
            engine.check_invariants()
            assert engine.load().num_used_tokens <= engine.capacity_tokens
        now += r.duration_s
        finished.extend(r.finished)
        steps.append(r)
    return now, finished, steps


def test_single_request_latency_equals_roofline() -> None:
    e = make_engine(kv_pool_tokens=1000 * P, chunked_prefill_size=1024)
    cost = get_preset(PRESET).cost_model()
    prompt = 40 * P - 10
    e.submit(req("a", 1, 40, 50, tail=10), 0.0)
    end, fin, _ = run(e)
    chunks = [PrefillChunk(0, 1024), PrefillChunk(1024, 1024), PrefillChunk(2048, prompt - 2048)]
    expected_ttft = sum(cost.prefill_time_s([c]) for c in chunks)
    expected = expected_ttft + sum(cost.decode_time_s(1, prompt + i) for i in range(49))
    assert fin[0].first_token_s == pytest.approx(expected_ttft)
    assert end == pytest.approx(expected) and fin[0].finished_s == pytest.approx(expected)
    assert fin[0].completion_tokens == 50 and fin[0].cached_tokens == 0


def test_cached_tokens_equal_radix_whole_block_match() -> None:
    e = make_engine()
    e.submit(req("a", 1, 10, 5, tail=3, prefix=6, prefix_base=9), 0.0)
    t, fin, _ = run(e)
    assert fin[0].cached_tokens == 0
    # b shares the 6 prefix blocks; a's partial last block was never cached
    e.submit(req("b", 2, 12, 5, prefix=6, prefix_base=9), t)
    e.submit(req("c", 1, 10, 5, tail=3, prefix=6, prefix_base=9), t)  # same prompt as a
    _, fin, _ = run(e, t)
    by = {f.rid: f for f in fin}
    assert by["b"].cached_tokens == 6 * P
    assert by["c"].cached_tokens == 9 * P          # 9 whole blocks; the 10th is partial
    assert e.counters.cached_tokens == 15 * P
    assert e.counters.prompt_tokens == (10 * P - 3) * 2 + 12 * P


def test_retraction_when_decode_outgrows_pool_and_all_complete() -> None:
    e = make_engine(kv_pool_tokens=40 * P, new_token_ratio_init=0.0)
    for i in range(6):
        e.submit(req(f"r{i}", i, 4, 6 * P), 0.0)
    _, fin, steps = run(e)
    assert len(fin) == 6 and all(f.finish_reason == "length" for f in fin)
    assert all(f.completion_tokens == 6 * P for f in fin)
    retracted = sum(len(s.retracted) for s in steps)
    assert retracted > 0 and e.counters.num_retracted_reqs == retracted
    assert sum(f.retractions for f in fin) == retracted
    assert e.counters.recomputed_tokens == sum(f.recomputed_tokens for f in fin) > 0


def test_retraction_picks_fewest_outputs_then_longest_prompt() -> None:
    e = make_engine(kv_pool_tokens=12 * P, new_token_ratio_init=0.0, chunked_prefill_size=4 * P)
    e.submit(req("long", 1, 3, 4 * P), 0.0)
    e.submit(req("short", 2, 2, 4 * P), 0.0)
    now = 0.0
    first_retracted: tuple[str, ...] = ()
    while e.has_work() and not first_retracted:
        r = e.step(now)
        now += r.duration_s
        first_retracted = r.retracted
    # both decode in lockstep (same output count): SGLang retracts the longer prompt first
    assert first_retracted == ("long",)


def test_lone_request_that_outgrows_the_pool_is_aborted() -> None:
    e = make_engine(kv_pool_tokens=4 * P)
    e.submit(req("a", 1, 2, 10 * P), 0.0)
    _, fin, _ = run(e)
    assert fin[0].finish_reason == "abort" and fin[0].completion_tokens < 10 * P
    assert e.counters.num_aborted_reqs == 1


def test_unreferenced_cache_is_evicted_lru_to_admit() -> None:
    e = make_engine(kv_pool_tokens=20 * P)
    t = 0.0
    for i in range(3):                              # three cached prompts of 6 blocks
        e.submit(req(f"w{i}", i, 6, 1), t)
        t, _, _ = run(e, t)
    e.submit(req("w0again", 0, 6, 1), t)            # touch 0: 1 is now least recent
    t, fin, _ = run(e, t)
    assert fin[0].cached_tokens == 6 * P
    e.submit(req("big", 7, 6, 1), t)                # needs 6 blocks + 1 output; 2 free
    t, _, _ = run(e, t)
    assert e.memory.cache.match_len(req("x", 1, 6, 1).prompt_blocks) == 0
    assert e.memory.cache.match_len(req("x", 0, 6, 1).prompt_blocks) == 6
    assert e.memory.cache.match_len(req("x", 2, 6, 1).prompt_blocks) == 6
    assert e.counters.evicted_tokens == 6 * P


def test_priority_eviction_keeps_high_priority_prefix() -> None:
    e = make_engine(kv_pool_tokens=20 * P, eviction_policy="priority")
    t = 0.0
    e.submit(req("hi", 0, 6, 1, priority=10), t)
    t, _, _ = run(e, t)
    e.submit(req("lo", 1, 6, 1, priority=0), t)
    t, _, _ = run(e, t)
    e.submit(req("mid", 2, 6, 1, priority=5), t)
    t, _, _ = run(e, t)
    e.submit(req("new", 3, 6, 1, priority=1), t)
    t, _, _ = run(e, t)
    cache = e.memory.cache
    assert cache.match_len(req("x", 0, 6, 1).prompt_blocks) == 6   # oldest but highest
    assert cache.match_len(req("x", 1, 6, 1).prompt_blocks) == 0   # lowest priority went


def test_abort_frees_kv_and_reports() -> None:
    e = make_engine()
    e.submit(req("a", 1, 8, 100, tail=5), 0.0)
    e.submit(req("q", 2, 8, 100), 0.0)
    now = 0.0
    for _ in range(3):
        now += e.step(now).duration_s
    used_running = e.load().num_used_tokens
    f = e.abort("a", now)
    assert f is not None and f.finish_reason == "abort" and f.completion_tokens > 0
    e.check_invariants()
    assert e.load().num_used_tokens < used_running
    assert e.abort("a", now) is None
    fq = e.abort("q", now)
    assert fq is not None and e.counters.num_aborted_reqs == 2
    assert not e.has_work()
    # only the cached whole prompt blocks remain, all unlocked
    cache = e.memory.cache
    assert e.load().num_used_tokens == cache.total_blocks * P and cache.protected_blocks == 0


def test_flush_cache_refused_while_running() -> None:
    e = make_engine()
    e.submit(req("a", 1, 4, 20), 0.0)
    e.step(0.0)
    assert e.flush_cache() is False
    run(e)
    assert e.memory.cache.total_blocks == 4
    assert e.flush_cache() is True
    assert e.load().num_used_tokens == 0 and e.memory.cache.total_blocks == 0


def test_session_pins_prefix_until_closed() -> None:
    e = make_engine(kv_pool_tokens=14 * P)
    assert e.open_session("s") and not e.open_session("s")
    e.submit(req("turn1", 1, 6, 1, session_id="s"), 0.0)
    t, _, _ = run(e)
    e.submit(req("other", 2, 9, 1), t)                 # 9 blocks: 8 are free, 6 pinned
    t, fin, _ = run(e, t)
    assert fin[0].finish_reason == "abort"             # pinned KV cannot be evicted
    assert e.memory.cache.match_len(req("x", 1, 6, 1).prompt_blocks) == 6
    assert e.close_session("s") and not e.close_session("s")
    e.submit(req("other2", 2, 9, 1), t)
    _, fin, _ = run(e, t)
    assert fin[0].finish_reason == "length"
    with pytest.raises(ValueError, match="not open"):
        e.submit(req("z", 3, 1, 1, session_id="nope"), t)


def test_priority_scheduling_admits_higher_priority_first() -> None:
    e = make_engine(enable_priority_scheduling=True, max_running_requests=1)
    e.submit(req("low", 1, 2, 3, priority=0), 0.0)
    e.submit(req("high", 2, 2, 3, priority=7), 0.0)
    _, fin, _ = run(e)
    assert [f.rid for f in fin] == ["high", "low"]


def test_fcfs_without_priority_scheduling() -> None:
    e = make_engine(max_running_requests=1)
    e.submit(req("low", 1, 2, 3, priority=0), 0.0)
    e.submit(req("high", 2, 2, 3, priority=7), 0.0)
    _, fin, _ = run(e)
    assert [f.rid for f in fin] == ["low", "high"]


def test_fast_forward_matches_single_steps_exactly() -> None:
    def workload(e: Engine) -> None:
        for i in range(8):
            e.submit(req(f"r{i}", i % 3, 3 + i, 40 + 17 * i, prefix=2, prefix_base=5), 0.0)

    a, b = make_engine(kv_pool_tokens=30 * P), make_engine(kv_pool_tokens=30 * P)
    workload(a)
    workload(b)
    end_a, fin_a, steps_a = run(a, max_decode_steps=1)
    end_b, fin_b, steps_b = run(b, max_decode_steps=64)
    assert len(steps_b) < len(steps_a)
    assert end_b == pytest.approx(end_a, rel=1e-12)
    assert [(f.rid, f.cached_tokens, f.retractions) for f in fin_a] == \
        [(f.rid, f.cached_tokens, f.retractions) for f in fin_b]
    for fa, fb in zip(fin_a, fin_b, strict=True):
        assert fb.finished_s == pytest.approx(fa.finished_s, rel=1e-12)
    assert a.counters.generation_tokens == b.counters.generation_tokens


def test_fast_forward_stops_at_until_s() -> None:
    e = make_engine()
    e.submit(req("a", 1, 2, 500), 0.0)
    r0 = e.step(0.0)                                    # prefill
    r = e.step(r0.duration_s, max_decode_steps=1000, until_s=r0.duration_s + 0.05)
    assert r.duration_s >= 0.05 and r.duration_s < 0.05 + 0.02
    assert r.decode_tokens == r.progress[0].new_tokens > 1


def test_submit_validation() -> None:
    e = make_engine()
    with pytest.raises(ValueError, match="blocks"):
        e.submit(EngineRequest("a", (1, 2), 3 * P, 1), 0.0)
    with pytest.raises(ValueError, match="exceeds the KV pool"):
        e.submit(req("a", 1, 65, 1), 0.0)
    e.submit(req("a", 1, 1, 1), 0.0)
    with pytest.raises(ValueError, match="already"):
        e.submit(req("a", 1, 1, 1), 0.0)
    assert e.step(0.0).duration_s > 0
    assert make_engine().step(0.0) == StepResult(duration_s=0.0)


def test_max_new_tokens_zero_warms_the_cache() -> None:
    e = make_engine()
    e.submit(req("warm", 1, 4, 0), 0.0)
    t, fin, _ = run(e)
    assert fin[0].completion_tokens == 0 and fin[0].finish_reason == "length"
    e.submit(req("hit", 1, 4, 2), t)
    _, fin, _ = run(e, t)
    assert fin[0].cached_tokens == 4 * P


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(1, 10),
                            st.integers(0, 63), st.integers(0, 300), st.integers(0, 3),
                            st.booleans()),
                  min_size=1, max_size=14),
    pool_blocks=st.integers(12, 40),
    chunk_pages=st.integers(1, 8),
    ff=st.sampled_from([1, 16]),
    policy=st.sampled_from(["lru", "priority"]),
)
def test_invariants_under_random_workloads(
    reqs: list[tuple[int, int, int, int, int, int, bool]], pool_blocks: int, chunk_pages: int,
    ff: int, policy: str,
) -> None:
    e = make_engine(kv_pool_tokens=pool_blocks * P, chunked_prefill_size=chunk_pages * P,
                    eviction_policy=policy)
    e.open_session("s")
    now = 0.0
    aborted: set[str] = set()
    finished: dict[str, FinishedRequest] = {}
    for i, (base, shared, blocks, tail, max_new, prio, abort_it) in enumerate(reqs):
        r = req(f"r{i}", base + 10, blocks, max_new, tail=min(tail, blocks * P - 1),
                prefix=min(shared, blocks), prefix_base=base, priority=prio,
                session_id="s" if i % 4 == 0 else None)
        e.submit(r, now)
        res = e.step(now, max_decode_steps=ff)
        e.check_invariants()
        assert e.load().num_used_tokens <= e.capacity_tokens
        now += res.duration_s
        finished.update({f.rid: f for f in res.finished})
        if abort_it and f"r{i}" not in finished:
            f = e.abort(f"r{i}", now)
            if f is not None:
                aborted.add(f.rid)
                finished[f.rid] = f
            e.check_invariants()
    _, fin, _ = run(e, now, max_decode_steps=ff)
    finished.update({f.rid: f for f in fin})
    assert set(finished) == {f"r{i}" for i in range(len(reqs))}
    for f in finished.values():
        if f.finish_reason == "length":
            assert f.completion_tokens == reqs[int(f.rid[1:])][4]
            assert f.cached_tokens % P == 0
    assert e.close_session("s")
    e.check_invariants()
    assert e.memory.cache.protected_blocks == 0
    assert e.flush_cache() and e.load().num_used_tokens == 0
