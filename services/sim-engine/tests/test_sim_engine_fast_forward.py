"""Decode fast-forward (``Engine.step(max_decode_steps=k, until_s=t)``) equals single steps.

A driver submits requests (and aborts) at given modelled times and steps the engine; with
``k == 1`` every iteration is its own step, with ``k > 1`` the engine folds decode iterations
up to the next event (``until_s``). Every finish (time, tokens, cached, recomputed,
retractions), every counter and the KV occupancy after each event must be the same; the
engine's invariants (KV never above C) are checked after every step of both runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thunder_sim.costmodel import get_preset
from thunder_sim.engine import Engine, EngineConfig, EngineRequest, FinishedRequest

PRESET = "h100-qwen3-8b"
P = 64


@dataclass(frozen=True)
class Arrival:
    at_s: float
    req: EngineRequest
    abort_after_s: float | None


def make_engine(**overrides: Any) -> Engine:
    return Engine(EngineConfig.from_preset(PRESET, **overrides), get_preset(PRESET).cost_model())


def drive(engine: Engine, arrivals: list[Arrival], k: int
          ) -> tuple[list[FinishedRequest], list[tuple[float, int]], int]:
    """Run to completion; returns finishes, (time, used tokens) at each event, and steps."""
    events: list[tuple[float, int, str, Arrival]] = []
    for i, a in enumerate(arrivals):
        events.append((a.at_s, i, "submit", a))
        if a.abort_after_s is not None:
            events.append((a.at_s + a.abort_after_s, i, "abort", a))
    events.sort(key=lambda e: (e[0], e[1], e[2] != "submit"))
    finished: list[FinishedRequest] = []
    used: list[tuple[float, int]] = []
    now = 0.0
    steps = 0
    while events or engine.has_work():
        while events and events[0][0] <= now:
            _, _, kind, a = events.pop(0)
            if kind == "submit":
                engine.submit(a.req, now)
            else:
                f = engine.abort(a.req.rid, now)
                if f is not None:
                    finished.append(f)
            used.append((now, engine.load().num_used_tokens))
        if not engine.has_work():
            if events:
                now = events[0][0]
            continue
        until = events[0][0] if events else None
        r = engine.step(now, max_decode_steps=k, until_s=until)
        steps += 1
        engine.check_invariants()
        assert engine.load().num_used_tokens <= engine.capacity_tokens
        finished.extend(r.finished)
        now += r.duration_s
        if r.duration_s == 0 and not r.finished and events:
            now = max(now, events[0][0])
    return finished, used, steps


def assert_same(a: Engine, b: Engine, arrivals: list[Arrival], k: int) -> tuple[int, int]:
    fin_a, used_a, steps_a = drive(a, arrivals, 1)
    fin_b, used_b, steps_b = drive(b, arrivals, k)
    key = [(f.rid, f.finish_reason, f.completion_tokens, f.cached_tokens, f.recomputed_tokens,
            f.retractions) for f in fin_a]
    assert key == [(f.rid, f.finish_reason, f.completion_tokens, f.cached_tokens,
                    f.recomputed_tokens, f.retractions) for f in fin_b]
    for fa, fb in zip(fin_a, fin_b, strict=True):
        assert fb.finished_s == pytest.approx(fa.finished_s, rel=1e-12, abs=1e-12)
        assert (fa.first_token_s is None) == (fb.first_token_s is None)
        if fa.first_token_s is not None:
            assert fb.first_token_s == pytest.approx(fa.first_token_s, rel=1e-12, abs=1e-12)
    assert [u for _, u in used_a] == [u for _, u in used_b]
    ca, cb = a.counters, b.counters
    assert (ca.generation_tokens, ca.prompt_tokens, ca.cached_tokens, ca.recomputed_tokens,
            ca.evicted_tokens, ca.num_retracted_reqs, ca.num_aborted_reqs) == \
        (cb.generation_tokens, cb.prompt_tokens, cb.cached_tokens, cb.recomputed_tokens,
         cb.evicted_tokens, cb.num_retracted_reqs, cb.num_aborted_reqs)
    assert a.load() == b.load()
    return steps_a, steps_b


def prompt(base: int, shared: int, blocks: int, tail: int) -> tuple[tuple[int, ...], int]:
    keys = tuple(7_000_000 + i for i in range(min(shared, blocks)))
    keys += tuple(base * 1_000_000 + i for i in range(blocks - len(keys)))
    return keys, blocks * P - min(tail, blocks * P - 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=st.lists(st.tuples(st.floats(0, 3.0), st.integers(0, 5), st.integers(0, 6),
                            st.integers(1, 12), st.integers(0, 63), st.integers(0, 400),
                            st.integers(0, 3), st.one_of(st.none(), st.floats(0, 2.0))),
                  min_size=1, max_size=16),
    pool_blocks=st.integers(14, 80),
    chunk_pages=st.integers(1, 8),
    k=st.sampled_from([2, 16, 256]),
    policy=st.sampled_from(["lru", "priority"]),
    priority_sched=st.booleans(),
    max_running=st.integers(1, 8),
)
def test_fast_forward_equals_single_steps_on_random_workloads(
    reqs: list[tuple[float, int, int, int, int, int, int, float | None]], pool_blocks: int,
    chunk_pages: int, k: int, policy: str, priority_sched: bool, max_running: int,
) -> None:
    cfg: dict[str, Any] = dict(
        kv_pool_tokens=pool_blocks * P, chunked_prefill_size=chunk_pages * P,
        eviction_policy=policy, enable_priority_scheduling=priority_sched,
        retraction_policy="priority" if priority_sched else "length",
        max_running_requests=max_running)
    arrivals = []
    for i, (at, base, shared, blocks, tail, max_new, prio, abort_after) in enumerate(reqs):
        keys, tokens = prompt(base, shared, min(blocks, pool_blocks - 1), tail)
        arrivals.append(Arrival(at, EngineRequest(f"r{i}", keys, tokens, max_new,
                                                  priority=prio), abort_after))
    assert_same(make_engine(**cfg), make_engine(**cfg), arrivals, k)


def test_fast_forward_folds_decode_and_matches_through_retractions() -> None:
    """A pool too small for the batch's outputs: decode must evict, then retract, and the
    fast-forward must stop at exactly the iteration where a page cannot be had."""
    arrivals = [Arrival(0.01 * i, EngineRequest(f"r{i}", *prompt(i, 3, 6, 5), 300 + 37 * i),
                        None) for i in range(8)]
    a, b = make_engine(kv_pool_tokens=40 * P), make_engine(kv_pool_tokens=40 * P)
    steps_single, steps_ff = assert_same(a, b, arrivals, 256)
    assert a.counters.num_retracted_reqs > 0 and a.counters.evicted_tokens > 0
    assert steps_ff * 5 < steps_single


def test_fast_forward_respects_clip_in_admission_reserve() -> None:
    """Outputs longer than SGLang's 4096-token clip: the reserve the admission check holds
    back changes shape mid-segment (constant while remaining > clip, then falling)."""
    arrivals = [Arrival(0.0, EngineRequest("long", *prompt(1, 0, 4, 0), 4200), None),
                Arrival(0.0, EngineRequest("big", *prompt(2, 0, 60, 0), 10), None),
                Arrival(0.5, EngineRequest("late", *prompt(3, 0, 30, 0), 5), None)]
    cfg = dict(kv_pool_tokens=160 * P)
    assert_same(make_engine(**cfg), make_engine(**cfg), arrivals, 256)
