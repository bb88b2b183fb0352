"""``make_scheduler``: the one factory of the scheduling core, from a policy name and knobs.

The live service (``thunder_scheduler.app``), the simulator's replays and the tests all build
their core here; errors are ``ConfigError`` with ``knob`` naming the knob (or ``"policy"``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from thunder_scheduling.config import ConfigError, SchedulerConfig, UnknownKnob
from thunder_scheduling.policies import POLICIES
from thunder_scheduling.scheduler import ProgramScheduler

_T = TypeVar("_T")

DEFAULT_POLICY = "thunder"
"""The policy a service or replay runs when none is named."""


def policy_names() -> list[str]:
    return sorted(POLICIES)


def make_scheduler(
    policy: str = DEFAULT_POLICY, *, config: SchedulerConfig | None = None, **knobs: Any
) -> ProgramScheduler:
    """Knobs naming a ``SchedulerConfig`` field set it (unless ``config`` is given); the rest
    go to the policy's config class. Unknown policy, unknown knob or a bad value:
    ``ConfigError`` naming it (``ConfigError.knob``)."""
    entry = POLICIES.get(policy)
    if entry is None:
        raise ConfigError(
            f"unknown policy {policy!r}; choose one of {', '.join(policy_names())}", knob="policy"
        )
    policy_cls, config_cls = entry
    scheduler_knobs = {k: v for k, v in knobs.items() if k in SchedulerConfig.field_names()}
    policy_knobs = {k: v for k, v in knobs.items() if k not in scheduler_knobs}
    accepted = {f.name for f in fields(config_cls)}
    unknown = sorted(name for name in policy_knobs if name not in accepted)
    if unknown:
        raise UnknownKnob(
            f"policy {policy!r} has no knob {unknown[0]!r}; its knobs: "
            f"{', '.join(sorted(accepted | SchedulerConfig.field_names()))}",
            knob=unknown[0],
        )
    if scheduler_knobs:
        if config is not None:
            raise ConfigError(
                f"pass either config or scheduler knobs, not both: {sorted(scheduler_knobs)}",
                knob=sorted(scheduler_knobs)[0],
            )
        config = _built(SchedulerConfig, scheduler_knobs, "scheduler")
    policy_config = _built(config_cls, policy_knobs, f"policy {policy!r}")
    return ProgramScheduler(policy_cls(policy_config), config or SchedulerConfig())


def _built(cls: type[_T], knobs: dict[str, Any], what: str) -> _T:
    """``cls(**knobs)``; a refusal becomes a ``ConfigError`` naming the knob it names."""
    try:
        return cls(**knobs)
    except (TypeError, ValueError) as error:
        named = [name for name in knobs if name in str(error)]
        knob = max(named, key=len) if named else None
        if isinstance(error, ConfigError) and error.knob is None:
            error.knob = knob
            raise
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{what}: {error}", knob=knob) from None


__all__ = ["DEFAULT_POLICY", "make_scheduler", "policy_names"]
