"""Building the engines a replay runs (the scheduling core comes from
``thunder_scheduling.make_scheduler``, so every policy the live service can run is available
under the same name)."""

from __future__ import annotations

from typing import Any

from thunder_sim.costmodel.presets import get_preset
from thunder_sim.engine import Engine, EngineConfig


def build_engines(
    preset: str, replicas: int, overrides: dict[str, Any] | None = None
) -> dict[str, Engine]:
    """``replicas`` engines of ``preset`` named ``engine-0`` ... (names sort in order)."""
    cost = get_preset(preset).cost_model()
    config = EngineConfig.from_preset(preset, **(overrides or {}))
    width = len(str(replicas - 1))
    return {f"engine-{i:0{width}d}": Engine(config, cost) for i in range(replicas)}
