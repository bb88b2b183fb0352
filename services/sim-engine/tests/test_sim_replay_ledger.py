"""The recompute ledger through a whole virtual replay: it adds up to the missed prompt tokens
under every registered policy, and the scheduler-made causes appear where the scheduler acts."""

from __future__ import annotations

import pytest

from thunder_scheduling.config import SchedulerConfig
from thunder_scheduling.registry import make_scheduler, policy_names
from thunder_sim.engine.ledger import MissCause
from thunder_sim.replay.live import parse_metrics
from thunder_sim.replay.metrics import RunRecorder, RunReport
from thunder_sim.replay.trace import TraceProgram, parse_session
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay


def synthetic(sid: str, steps: int, first_blocks: int, growth_blocks: int, out: int,
              tool_s: float, key_space: int) -> TraceProgram:
    """A coding-agent-like session in whole blocks: each prompt re-sends the last and appends."""
    reqs = []
    for i in range(steps):
        n = (first_blocks + i * growth_blocks) * 64
        reqs.append({"t": i, "type": "n", "in": n, "out": out,
                     "hash_ids": list(range(1, n // 64 + 1)),
                     "input_types": ["text" if i == 0 else "tool_result"],
                     "think_time": 0 if i == 0 else tool_s})
    return parse_session({"id": sid, "block_size": 64, "requests": reqs}, key_space=key_space)


def workload(n: int = 12) -> list[TraceProgram]:
    return [synthetic(f"p{i}", 10, 60 + 7 * i, 20, 80, 3.0 + i % 4, i + 1) for i in range(n)]


def crowded(policy: str, **kw: object) -> RunReport:
    """12 programs whose peak contexts (~16-20k tokens) far exceed two 60k-token pools."""
    cfg = VirtualConfig(policy=policy, replicas=2, concurrency=12, duration_s=600.0,
                        engine_overrides={"kv_pool_tokens": 60_000}, check_invariants=True)
    return VirtualReplay(workload(), cfg, **kw).run()  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", policy_names())
def test_ledger_adds_up_to_the_missed_prompt_tokens(policy: str) -> None:
    r = crowded(policy)
    assert r.steps > 0
    assert set(r.miss_tokens) >= {c.value for c in MissCause}
    assert sum(r.miss_tokens.values()) == r.prompt_tokens - r.cached_tokens
    assert all(v >= 0 for v in r.miss_tokens.values())
    engine_total = sum(r.extra["engine_miss_tokens"].values())
    assert engine_total >= r.prompt_tokens - r.cached_tokens


def test_with_room_for_everything_every_miss_is_first_sight_and_the_ideal() -> None:
    cfg = VirtualConfig(policy="sticky", replicas=1, concurrency=6,
                        engine_overrides={"kv_pool_tokens": 2_000_000})
    r = VirtualReplay(workload(6), cfg).run()
    missed = r.prompt_tokens - r.cached_tokens
    assert r.miss_tokens[MissCause.FIRST_SIGHT] == missed > 0
    assert r.hit_rate == pytest.approx(r.ideal_hit_rate, abs=1e-12)


def test_engine_only_round_robin_loses_to_moves_and_evictions_while_acting() -> None:
    r = crowded("round_robin")
    assert r.miss_tokens[MissCause.MOVED] > 0
    assert r.miss_tokens[MissCause.EVICTED_ACTING] > 0
    assert r.miss_tokens[MissCause.EVICTED_PAUSED] == 0       # it never pauses
    assert r.miss_tokens[MissCause.FORCED_RESTORE] == 0


def test_pausing_policy_loses_to_pauses_and_forced_restores() -> None:
    scheduler = make_scheduler("thunder", config=SchedulerConfig(max_paused_s=20.0))
    r = crowded("thunder", scheduler=scheduler)
    assert r.pauses > 0 and r.extra["scheduler_forced_restores"] > 0
    assert r.miss_tokens[MissCause.EVICTED_PAUSED] > 0
    assert r.miss_tokens[MissCause.FORCED_RESTORE] > 0
    assert 0 < r.max_paused_share <= 1
    assert sum(r.miss_tokens.values()) == r.prompt_tokens - r.cached_tokens


def test_paused_share_of_life_per_program() -> None:
    rec = RunRecorder()
    rec.started("a", 0.0)
    rec.started("b", 0.0)
    rec.paused("a", 2.0)
    rec.resumed("a", 6.0, migrated=False)
    rec.paused("a", 8.0)
    rec.released("a", 9.0)
    rec.ended("a", 10.0)                   # paused 4 + 1 of 10 s
    rec.paused("b", 15.0)
    rec.close(20.0)                         # b: still paused at the end, 5 of 20 s
    assert sorted(rec.paused_shares) == [0.25, 0.5]
    assert rec.programs_done == 1 and rec.programs_started == 2


def test_live_metrics_parse_keeps_the_ledger_per_cause() -> None:
    text = (
        '# TYPE thunder_sim_prompt_miss_tokens_total counter\n'
        'thunder_sim_prompt_miss_tokens_total{cause="first_sight",model_name="m"} 640.0\n'
        'thunder_sim_prompt_miss_tokens_total{cause="evicted_away",model_name="m"} 128.0\n'
        'sglang:prompt_tokens_total{model_name="m"} 1000.0\n')
    parsed = parse_metrics(text)
    assert parsed["thunder_sim_prompt_miss_tokens_total"] == 768.0
    assert parsed["thunder_sim_prompt_miss_tokens_total/first_sight"] == 640.0
    assert parsed["thunder_sim_prompt_miss_tokens_total/evicted_away"] == 128.0
    assert parsed["sglang:prompt_tokens_total"] == 1000.0
