"""``sticky``: the pass-through placement policy (no pausing, no holding).

A program sticks to the backend it was first placed on; a new program goes to the healthy
backend with the most free KV tokens (capacity minus the tokens charged there, ties broken by
backend name). It never pauses and never holds for room: every request is admitted at once.
When its backend becomes unhealthy the scheduler moves the program (it is restored on the
backend with most free KV). The engine's own scheduler handles memory pressure.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.policy import BasePolicy


@dataclass(frozen=True, slots=True)
class StickyConfig:
    """No knobs."""


class StickyPolicy(BasePolicy):
    name = "sticky"

    def __init__(self, config: StickyConfig | None = None) -> None:
        self.config = config or StickyConfig()


__all__ = ["StickyConfig", "StickyPolicy"]
