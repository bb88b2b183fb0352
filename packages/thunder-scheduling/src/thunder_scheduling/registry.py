"""``make_scheduler``: build a ``ProgramScheduler`` from a policy name and knobs."""

from __future__ import annotations

from typing import Any

from thunder_scheduling.config import ConfigError, SchedulerConfig
from thunder_scheduling.policies import POLICIES
from thunder_scheduling.scheduler import ProgramScheduler

DEFAULT_POLICY = "thunder"
"""The policy a service or replay runs when none is named."""


def policy_names() -> list[str]:
    return sorted(POLICIES)


def make_scheduler(
    policy: str = DEFAULT_POLICY, *, config: SchedulerConfig | None = None, **knobs: Any
) -> ProgramScheduler:
    """Knobs naming a ``SchedulerConfig`` field set it (unless ``config`` is given); the rest
    go to the policy's config class. Unknown policy or knob: ``ConfigError`` naming it."""
    entry = POLICIES.get(policy)
    if entry is None:
        raise ConfigError(f"unknown policy {policy!r}; choose one of {', '.join(policy_names())}")
    policy_cls, config_cls = entry
    scheduler_knobs = {k: v for k, v in knobs.items() if k in SchedulerConfig.field_names()}
    policy_knobs = {k: v for k, v in knobs.items() if k not in scheduler_knobs}
    if scheduler_knobs:
        if config is not None:
            raise ConfigError(
                f"pass either config or scheduler knobs, not both: {sorted(scheduler_knobs)}"
            )
        config = SchedulerConfig(**scheduler_knobs)
    try:
        policy_config = config_cls(**policy_knobs)
    except TypeError as error:
        raise ConfigError(f"policy {policy!r}: {error}") from None
    return ProgramScheduler(policy_cls(policy_config), config or SchedulerConfig())


__all__ = ["DEFAULT_POLICY", "make_scheduler", "policy_names"]
