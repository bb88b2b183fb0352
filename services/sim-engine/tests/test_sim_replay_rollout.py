"""The RL rollout workload (``replay/rollout.py``): the sibling rule, batches played to the end,
and the weight update between batches (no program lost, no stale prefix in the engines or the
core)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from thunder_sim.replay.rollout import (
    RolloutReplay,
    RolloutShape,
    build_batches,
    sibling,
    tail_share,
)
from thunder_sim.replay.trace import TraceProgram, TraceStep, parse_session
from thunder_sim.replay.virtual import VirtualConfig

POOL = {"kv_pool_tokens": 2_000_000}


def session(sid: str, key_space: int, *prompts: int, first_extra: int = 0) -> TraceProgram:
    """Append-only prompts of ``prompts`` blocks each (a 1 s tool gap before every later one)."""
    reqs: list[dict[str, Any]] = []
    for i, blocks in enumerate(prompts):
        reqs.append({"t": i, "type": "n", "in": blocks * 64, "out": 40,
                     "hash_ids": list(range(1, blocks + 1)),
                     "input_types": ["text" if i == 0 else "tool_result"], "think_time": 1.0})
    return parse_session({"id": sid, "block_size": 64, "requests": reqs}, key_space=key_space)


SESSION = session("s", 1, 20, 26, 31, 37, 40, 44)


def shared_prefix(a: TraceStep, b: TraceStep) -> int:
    n = 0
    for x, y in zip(a.blocks, b.blocks, strict=False):
        if x != y:
            break
        n += 1
    return n


def test_siblings_share_the_first_prompt_then_diverge() -> None:
    one = sibling(SESSION, "g0-s0", 0, random.Random(1), 0.5)
    two = sibling(SESSION, "g0-s1", 1, random.Random(2), 0.5)
    first = SESSION.steps[0]
    assert one.steps[0].blocks == two.steps[0].blocks == first.blocks
    assert one.steps[0].prompt_tokens == first.prompt_tokens
    for a, b in zip(one.steps[1:], two.steps[1:], strict=False):
        # the later prompts share exactly the first prompt with the sibling, nothing more
        assert shared_prefix(a, b) == len(first.blocks)
    # and, within one sample, consecutive prompts share what the session's did
    for i in range(1, len(one.steps) - 1):
        assert shared_prefix(one.steps[i], one.steps[i + 1]) == shared_prefix(
            SESSION.steps[i], SESSION.steps[i + 1])


def test_a_sample_keeps_between_half_and_all_of_the_steps_and_its_own_lengths() -> None:
    n = len(SESSION.steps)
    lengths = {len(sibling(SESSION, f"p{j}", j, random.Random(j), 0.5).steps)
               for j in range(40)}
    assert min(lengths) >= 3 and max(lengths) <= n and len(lengths) > 1
    flat = sibling(SESSION, "p", 0, random.Random(3), 0.0)
    assert [s.output_tokens for s in flat.steps] == [
        s.output_tokens for s in SESSION.steps[:len(flat.steps)]]
    noisy = sibling(SESSION, "p", 0, random.Random(3), 0.5)
    assert [s.output_tokens for s in noisy.steps] != [
        s.output_tokens for s in SESSION.steps[:len(noisy.steps)]]


def test_batches_are_groups_of_samples_of_one_session_and_repeat_with_the_seed() -> None:
    sessions = [SESSION, session("t", 2, 10, 15, 18)]
    shape = RolloutShape(groups=2, samples=3, batches=2, seed=7)
    batches = build_batches(sessions, shape)
    assert [len(b) for b in batches] == [6, 6]
    first = batches[0]
    assert {t.program.steps[0].blocks for t in first if t.group == 0} == {
        SESSION.steps[0].blocks}
    assert first[4].tags == {"rollout": "step-0", "rollout_group": "1", "rollout_sample": "1"}
    assert first[4].program.program_id == "step-0-g1-s1"
    again = build_batches(sessions, shape)
    assert [t.program for t in again[1]] == [t.program for t in batches[1]]


def test_tail_is_the_last_tenth_of_the_programs_share_of_the_makespan() -> None:
    ends = [10.0] * 9 + [40.0]
    assert tail_share(ends, 0.0) == pytest.approx(30 / 40)
    assert tail_share([5.0 + e for e in [10.0] * 10], 5.0) == 0.0


class _NoFlush(RolloutReplay):
    """A weight update that forgets to flush the engines (the control case)."""

    def _weight_update(self) -> None:
        flush = [e.flush_cache for e in self.engines.values()]
        for engine in self.engines.values():
            engine.flush_cache = lambda: True  # type: ignore[method-assign]
        try:
            super()._weight_update()
        finally:
            for engine, real in zip(self.engines.values(), flush, strict=True):
                engine.flush_cache = real  # type: ignore[method-assign]


@pytest.mark.parametrize("policy", ["thunder", "cache_aware"])
def test_a_weight_update_between_batches_loses_no_program_and_keeps_no_stale_prefix(
        policy: str) -> None:
    sessions = [SESSION, session("t", 2, 30, 33, 35, 36)]
    shape = RolloutShape(groups=2, samples=3, batches=2, seed=3)
    batches = build_batches(sessions, shape)   # batch 1 replays batch 0's prompts (same keys)
    cfg = VirtualConfig(policy=policy, replicas=2, engine_overrides=POOL, check_invariants=True)

    def first_steps(replay: RolloutReplay, batch: str) -> dict[str, int]:
        return {s.program_id: s.cached_tokens for s in replay.recorder.steps
                if s.program_id.startswith(batch + "-") and s.step_index == 0}

    replay = RolloutReplay(batches, cfg, shape)
    report = replay.run_rollouts()
    assert [b.programs for b in report.batches] == [6, 6]
    planned = sum(len(t.program.steps) for b in batches for t in b)
    assert report.run.steps == planned and report.run.failed_steps == 0
    assert report.flushes == 1
    assert replay.scheduler.counters["backend_flushes"] == 2
    # after the update, each group's prompt is prefilled again: no sibling of batch 1 can find
    # it cached before one of them has computed it under the new weights
    cached = first_steps(replay, "step-1")
    for group in ("g0", "g1"):
        assert min(v for pid, v in cached.items() if f"-{group}-" in pid) == 0

    control = _NoFlush(batches, cfg, shape)
    control.run_rollouts()
    stale = first_steps(control, "step-1")
    assert min(stale.values()) > 0   # without the flush every one of them hits old KV
