"""Validity checks of the replay instrument, in virtual mode.

Each test builds its workload from the schema (synthetic sessions) or the shared traces when
present, runs the real scheduling core and real engine models, and compares against a value
computed independently of the replay.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from thunder_sim.costmodel.base import PrefillChunk
from thunder_sim.costmodel.presets import get_preset
from thunder_sim.engine import Engine
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import TraceProgram, default_trace_dir, parse_session, trace_files
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

PRESET = "h100-qwen3-8b"


def synthetic(sid: str, steps: int, first_tokens: int, growth_tokens: int, out: int,
              tool_s: float, key_space: int) -> TraceProgram:
    """A coding-agent-like session: each prompt re-sends the last one and appends."""
    reqs = []
    for i in range(steps):
        n = first_tokens + i * growth_tokens
        reqs.append({"t": i, "type": "n", "in": n, "out": out,
                     "hash_ids": list(range(1, -(-n // 64) + 1)),
                     "input_types": ["text" if i == 0 else "tool_result"],
                     "think_time": 0 if i == 0 else tool_s})
    return parse_session({"id": sid, "block_size": 64, "requests": reqs}, key_space=key_space)


def test_engine_never_holds_more_than_its_pool() -> None:
    programs = [synthetic(f"p{i}", 12, 6000, 1500, 120, 2.0, i + 1) for i in range(8)]
    cfg = VirtualConfig(policy="round_robin", replicas=2, concurrency=8,
                        engine_overrides={"kv_pool_tokens": 40_000}, check_invariants=True)
    replay = VirtualReplay(programs, cfg)
    peaks: dict[str, int] = dict.fromkeys(replay.engines, 0)
    for name, engine in replay.engines.items():
        step = engine.step

        def watched(now: float, k: int = 1, until: float | None = None,
                    _e: Engine = engine, _s=step, _n: str = name) -> object:
            res = _s(now, k, until)
            peaks[_n] = max(peaks[_n], _e.load().num_used_tokens)
            return res

        engine.step = watched  # type: ignore[method-assign]
    report = replay.run()
    assert report.steps == 96 and report.failed_steps == 0
    assert report.extra["retractions"] > 0 or report.hit_rate < report.ideal_hit_rate
    for name, engine in replay.engines.items():
        assert 0 < peaks[name] <= engine.capacity_tokens == 40_000


def _ideal_from_raw(path: Path, max_steps: int) -> tuple[int, int]:
    """Hit tokens of an unlimited cache, straight from the file's hash_ids (no replay code)."""
    data = orjson.loads(gzip.decompress(path.read_bytes()))
    cached = prompt = 0
    earlier: list[list[int]] = []
    for r in data["requests"][:max_steps]:
        ids = r["hash_ids"]
        best = 0
        for e in earlier:
            n = 0
            while n < min(len(e), len(ids)) and e[n] == ids[n]:
                n += 1
            best = max(best, n)
        cached += min(best * 64, r["in"])
        prompt += r["in"]
        earlier.append(ids)
    return cached, prompt


def test_unlimited_kv_hit_rate_equals_ideal_prefix_reuse() -> None:
    files = []
    for f in trace_files(default_trace_dir())[:40]:
        data = orjson.loads(gzip.decompress(f.read_bytes()))
        reqs = data["requests"]
        if any(r.get("type") == "subagent" for r in reqs[:15]):
            continue
        if max(r["in"] + r["out"] for r in reqs[:15]) > 131_072:
            continue
        files.append(f)
        if len(files) == 4:
            break
    assert len(files) == 4
    programs = [
        parse_session(orjson.loads(gzip.decompress(f.read_bytes())), str(f), max_steps=15,
                      key_space=i + 1)
        for i, f in enumerate(files)
    ]
    cached = prompt = 0
    for f in files:
        c, p = _ideal_from_raw(f, 15)
        cached, prompt = cached + c, prompt + p
    cfg = VirtualConfig(policy="sticky", replicas=1, concurrency=4,
                        engine_overrides={"kv_pool_tokens": 4_000_000})
    report = VirtualReplay(programs, cfg).run()
    assert report.prompt_tokens == prompt
    assert report.cached_tokens == pytest.approx(cached, abs=64 * report.steps)
    assert report.hit_rate == pytest.approx(cached / prompt, abs=0.002)
    assert report.recomputed_tokens == 0


def test_one_program_step_latency_equals_roofline() -> None:
    program = synthetic("solo", 3, 3000, 1000, 50, 1.0, 1)
    report_engine = get_preset(PRESET).cost_model()
    replay = VirtualReplay([program], VirtualConfig(policy="sticky", replicas=1, concurrency=1))
    report = replay.run()
    latencies = sorted(s.finished_s - s.sent_s for s in replay.recorder.steps)
    predicted = []
    cached = 0
    for step in program.steps:
        n = step.prompt_tokens
        t = report_engine.prefill_time_s([PrefillChunk(cached, n - cached)])
        for i in range(step.output_tokens - 1):
            t += report_engine.decode_time_s(1, n + 1 + i)
        predicted.append(t)
        cached = (n // 64) * 64     # whole blocks of this prompt are cached for the next
    assert report.steps == 3
    for got, want in zip(latencies, sorted(predicted), strict=True):
        assert got == pytest.approx(want, rel=0.01)


def test_engine_only_thrashes_as_programs_outgrow_the_pool() -> None:
    results = []
    for growth in (200, 2000, 5000):     # contexts from ~1/4 of the pool to far beyond it
        programs = [synthetic(f"p{i}", 10, 4000, growth, 100, 5.0, i + 1) for i in range(6)]
        cfg = VirtualConfig(policy="round_robin", replicas=1, concurrency=6,
                            gaps=GapPolicy(), engine_overrides={"kv_pool_tokens": 60_000})
        results.append(VirtualReplay(programs, cfg).run())
    hits = [r.hit_rate for r in results]
    rates = [r.steps_per_min for r in results]
    assert hits[0] > 0.8 > hits[1] > hits[2]
    assert rates[0] > rates[1] > rates[2]
    assert results[2].recomputed_tokens > 0 or results[2].extra["retractions"] > 0 or hits[2] < 0.3
