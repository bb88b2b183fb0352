"""Shared by the engine tests that drive one simulated engine by hand (ledger, HiCache): the
engine on small pools of the H100 / Qwen3-8B preset, and a loop that steps it until idle."""

from __future__ import annotations

from typing import Any

from thunder_sim.costmodel import get_preset
from thunder_sim.engine import Engine, EngineConfig, FinishedRequest

PRESET = "h100-qwen3-8b"
P = 64
"""Tokens per block (the preset's page)."""


def make_engine(pages: int = 20, **overrides: Any) -> Engine:
    return Engine(EngineConfig.from_preset(PRESET, kv_pool_tokens=pages * P, **overrides),
                  get_preset(PRESET).cost_model())


def run(engine: Engine, now: float = 0.0) -> tuple[float, dict[str, FinishedRequest]]:
    """Step until nothing is left, checking the KV accounting after every step: the end time
    and every finished request by id."""
    done: dict[str, FinishedRequest] = {}
    while engine.has_work():
        r = engine.step(now)
        engine.check_invariants()
        now += r.duration_s
        done.update((f.rid, f) for f in r.finished)
    return now, done
