"""round_robin: the engine-only baseline (N engines behind a round-robin load balancer).

What users have today when they put several SGLang or vLLM replicas behind a plain load
balancer (a Kubernetes Service, nginx, or the SGLang router with ``--policy round_robin``):
every request goes to the next healthy engine in turn, with no notion of programs. It never
pauses, never holds, never sets engine priorities, and ignores where a program's KV is.

Hooks (see ``policy.py``):

- ``route_request(program, request, view)``: the request-level decision, the next healthy
  backend in name order after the one chosen last. The scheduler calls it for every request
  of a policy that defines it, before ``place``'s sticky placement applies;
- ``place(program, view)``: the same rotation, for the program-level placement the scheduler
  asks for when a program first needs a backend (and as the fallback when a scheduler does
  not call ``route_request``: round-robin over programs rather than requests).
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_scheduling.events import RequestArrived
from thunder_scheduling.policy import BasePolicy, PolicyView
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class RoundRobinConfig:
    """No knobs: the rotation order is the backends' names, sorted."""


class RoundRobinPolicy(BasePolicy):
    name = "round_robin"
    pauses = False
    routes_requests = True

    def __init__(self, config: RoundRobinConfig | None = None) -> None:
        self.config = config or RoundRobinConfig()
        self._last: str | None = None

    def _next(self, view: PolicyView) -> str | None:
        names = [ledger.name for ledger in view.healthy()]
        if not names:
            return None
        if self._last is None:
            chosen = names[0]
        else:
            later = [n for n in names if n > self._last]
            chosen = later[0] if later else names[0]
        self._last = chosen
        return chosen

    def place(self, program: Program, view: PolicyView) -> str | None:
        return self._next(view)

    def route_request(
        self, program: Program, request: RequestArrived, view: PolicyView
    ) -> str | None:
        return self._next(view)


__all__ = ["RoundRobinConfig", "RoundRobinPolicy"]
