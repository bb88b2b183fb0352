"""``autellix``: an Autellix-style program-level least-attained-service policy (arXiv
2502.13965, PLAS), for comparison.

What it ports: programs are first-class; a program's priority is the service it has
attained so far (here in tokens: completion tokens plus uncached prompt tokens, summed over
its responses; Autellix measures execution time, which tokens processed stand in for). A
multi-level queue maps attained service to levels: level k holds programs whose service is
below ``level_base_tokens * level_ratio ** k`` (the last level takes the rest), like a
multi-level feedback queue with geometrically growing quanta. Lower levels go first: in the
waiting queue (admission order) and as engine priority on every request (``levels - 1 -
level``, higher runs first). Anti-starvation: a program waiting longer than
``starvation_s`` is promoted ahead of all levels (the scheduler's ``promote_after_s``).

How it differs: Autellix preempts running calls inside its engine; here the lever is the
engine priority plus admission order, and it never pauses a program or protects KV
(Autellix does not account for KV locality under memory pressure). A program returns to its
previous backend when it fits there (Autellix's locality-aware balancer keeps a program's
calls on one engine), otherwise the one with most room.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.config import ConfigError
from thunder_scheduling.policy import BasePolicy, PolicyView, fits, free_room
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class AutellixConfig:
    levels: int = 6
    level_base_tokens: int = 2048
    level_ratio: float = 4.0
    """Level bounds 2k, 8k, 32k, 128k, 512k tokens of attained service, then the last level."""
    starvation_s: float = 60.0
    watermark: float = 1.0
    """Admission limit as a fraction of capacity."""

    def __post_init__(self) -> None:
        if not isinstance(self.levels, int) or self.levels < 1:
            raise ConfigError(f"AutellixConfig.levels must be an int >= 1, got {self.levels!r}")
        if not isinstance(self.level_base_tokens, int) or self.level_base_tokens < 1:
            raise ConfigError(
                f"AutellixConfig.level_base_tokens must be an int >= 1, "
                f"got {self.level_base_tokens!r}"
            )
        if not isinstance(self.level_ratio, int | float) or self.level_ratio <= 1:
            raise ConfigError(f"AutellixConfig.level_ratio must be > 1, got {self.level_ratio!r}")
        if not isinstance(self.starvation_s, int | float) or self.starvation_s <= 0:
            raise ConfigError(
                f"AutellixConfig.starvation_s must be positive, got {self.starvation_s!r}"
            )
        if not isinstance(self.watermark, int | float) or not 0 < self.watermark <= 1:
            raise ConfigError(f"AutellixConfig.watermark must be in (0, 1], got {self.watermark!r}")


class AutellixPolicy(BasePolicy):
    name = "autellix"
    pauses = False
    restore_needs_fit = True

    def __init__(self, config: AutellixConfig | None = None) -> None:
        self.config = config or AutellixConfig()
        self.high_watermark = self.config.watermark
        self.low_watermark = self.config.watermark
        self.promote_after_s = self.config.starvation_s
        bounds: list[float] = []
        bound = float(self.config.level_base_tokens)
        for _ in range(self.config.levels - 1):
            bounds.append(bound)
            bound *= self.config.level_ratio
        self._bounds = bounds

    def level(self, program: Program) -> int:
        for index, bound in enumerate(self._bounds):
            if program.service_tokens < bound:
                return index
        return len(self._bounds)

    def place(self, program: Program, view: PolicyView) -> str | None:
        best = None
        best_room = 0.0
        for ledger in view.healthy():
            if not (view.forced or fits(program, ledger, view, self.low_watermark)):
                continue
            room = free_room(ledger, view.now, self.low_watermark)
            if ledger.name == program.backend:
                room = float("inf")
            if best is None or room > best_room:
                best, best_room = ledger, room
        return None if best is None else best.name

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (self.level(program), program.seq)

    def engine_priority(self, program: Program, view: PolicyView) -> int | None:
        return self.config.levels - 1 - self.level(program)


__all__ = ["AutellixConfig", "AutellixPolicy"]
