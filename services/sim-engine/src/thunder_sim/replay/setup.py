"""Building the parts a replay runs: the scheduling core with a named policy, and engines.

Policies come from the scheduler's registry (``thunder_scheduling.policies.POLICIES``),
so every policy the live service can run is available here under the same name.
"""

from __future__ import annotations

from typing import Any, Protocol

from thunder_scheduling.commands import Command
from thunder_scheduling.config import SchedulerConfig
from thunder_scheduling.events import Event
from thunder_sim.costmodel.presets import get_preset
from thunder_sim.engine import Engine, EngineConfig


class SchedulerLike(Protocol):
    def handle(self, event: Event) -> list[Command]: ...

    def tick(self, now: float) -> list[Command]: ...

    def next_deadline(self) -> float | None: ...


def policy_names() -> list[str]:
    from thunder_scheduling.policies import POLICIES

    return sorted(POLICIES)


def build_scheduler(
    policy: str, knobs: dict[str, Any] | None = None, config: SchedulerConfig | None = None
) -> SchedulerLike:
    """A ``ProgramScheduler`` running ``policy`` with its config built from ``knobs``."""
    from thunder_scheduling.policies import POLICIES
    from thunder_scheduling.scheduler import ProgramScheduler

    try:
        policy_cls, config_cls = POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown --policy {policy!r}; known: {', '.join(sorted(POLICIES))}"
        ) from None
    try:
        policy_config = config_cls(**(knobs or {}))
    except TypeError as exc:
        raise ValueError(f"bad knob for policy {policy!r}: {exc}") from None
    return ProgramScheduler(policy_cls(policy_config), config or SchedulerConfig())


def build_engines(
    preset: str, replicas: int, overrides: dict[str, Any] | None = None
) -> dict[str, Engine]:
    """``replicas`` engines of ``preset`` named ``engine-0`` ... (names sort in order)."""
    cost = get_preset(preset).cost_model()
    config = EngineConfig.from_preset(preset, **(overrides or {}))
    width = len(str(replicas - 1))
    return {f"engine-{i:0{width}d}": Engine(config, cost) for i in range(replicas)}
