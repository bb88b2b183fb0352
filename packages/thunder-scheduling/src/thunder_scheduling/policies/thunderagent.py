"""``thunderagent``: ThunderAgent's public scheduler as it behaves with its own defaults, kept
for comparison (the anchor ``thunder`` is measured against). Not for production.

Written from the paper (arXiv 2602.13692, sec. 4.3) and the public code of
ThunderAgent-org/ThunderAgent at commit a7eef77 (``ThunderAgent/scheduler/router.py``,
``backend/state.py``, ``config.py``); no code copied. Line numbers below are that commit's.
The defects are kept on purpose, each marked **defect** with its source line.

Algorithm (what the router does with ``--router tr`` and default flags):

* **Capacity estimate** (``state.py:182-191`` ``remaining_capacity``): per backend,
  ``capacity - (sum of reasoning programs' tokens + acting_token_weight x sum of acting
  programs' tokens - shared_tokens + 100 x active programs)``. A program's tokens are its
  last ``usage.total_tokens`` (``router.py:408``), or before a response the prompt estimate
  (``router.py:302-303``; ThunderAgent divides payload characters by a learned ratio, here the
  proxy's prompt estimate). *Reasoning* means a request is pending (set before a request,
  ``router.py:370``, also while paused, ``router.py:331``); *acting* means the last response
  ended (``router.py:390``), whatever tools do (ThunderAgent has no tool events).
  **Defect**: ``shared_tokens`` is only updated by ``BackendState.update_shared_tokens``,
  which nothing calls (``state.py:126``), so the shared system prompt is counted once per
  program. **Defect**: the estimate ignores pages (no rounding to the engine's page size).
  **Defect**: programs marked for pause still count in it (``state.py:189-191`` has no
  ``future_paused_tokens`` term), which drives the marking defect below.
* **Fixed tick** (``router.py:660-682``, interval 5 s, ``config.py:27``): pauses and
  resumes happen only there: first the resume pass, then the pause pass for every backend
  whose remaining capacity is negative. Between ticks, active programs grow unchecked.
* **New programs** (``router.py:249-281``): placed at once only if the waiting queue is empty
  and some healthy backend has remaining capacity >= estimate + 100; among those the one
  with the fewest active program tokens. Otherwise they wait for a tick. **Defect**: a new
  program waits behind any queue, so first responses can take minutes.
* **Pause** (``router.py:685-717``): while remaining capacity < 0, pause the smallest acting
  program (at once), else mark the smallest unmarked reasoning program (paused when its
  response ends, ``router.py:411``). **Defect**: a mark does not change the remaining
  capacity, so once no acting program is left the loop marks *every* reasoning program on
  the backend. **Defect**: smallest first ignores how long each program will be away.
* **Resume** (``router.py:719-844``): sum the remaining capacity of healthy backends with
  more than 100 left; walk the waiting programs in groups (reasoning with more than one
  step, then first-step programs, then acting; ``router.py:766-778``), each ascending by the
  tokens recorded when it was paused (``router.py:505``), taking each whose tokens + 100 fit
  the running total (skipping those that do not); then place the chosen ones largest first
  on the backend with the most remaining room, re-sorted after each placement, dropping a
  backend once it has 100 or less left. **Defect**: placement ignores where the program's KV
  may still be (no locality), and the capacity is summed across backends so a program can
  be chosen that fits none of them alone. **Defect**: a program paused after its first
  response counts as first-step (``step_count == 1``, ``router.py:771``).
* **Acting weight and decay** (``config.py:28-29``): weight 1.0, no decay by default. With
  ``use_acting_token_decay`` the resume pass (only) weighs an acting program
  ``tokens x 2**-t`` with ``t`` its seconds in the tool and no acting weight
  (``state.py:193-211``). **Defect**: the pause pass never decays, so a tick can resume a
  program on room the pause pass then takes back.
* **Forced resume** (``router.py:846-868``): a request that has waited 1,800 s for its
  program to be resumed forces the resume onto the program's previous backend (a new
  program: the backend with the fewest programs, ``router.py:171-191``), regardless of
  capacity. **Defect**: nothing else bounds a wait, and a paused program with no pending
  request is never forced.

Differences (not ports): the forced resume is checked at each tick (at most 5 s late);
a previous backend that became unhealthy is replaced by the healthy one with the fewest
programs; the scheduler's lease still ends programs idle past it (ThunderAgent never
expires programs: a service-safety rule with no effect on replays, whose programs end);
the paused order is sampled at the first tick after the pause (ThunderAgent: at the pause).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thunder_scheduling.accounting import BackendLedger, WeightMode
from thunder_scheduling.config import ConfigError
from thunder_scheduling.control import SchedulerControl
from thunder_scheduling.decisions import expire_leases
from thunder_scheduling.policy import ActingWeight, BasePolicy, PolicyView
from thunder_scheduling.program_table import Program


@dataclass(frozen=True, slots=True)
class ThunderAgentConfig:
    scheduler_interval_s: float = 5.0
    """The fixed tick (``config.py:27``)."""
    acting_token_weight: float = 1.0
    """Weight of acting programs' tokens (``config.py:28``)."""
    use_acting_token_decay: bool = False
    """2**-t decay of acting tokens, resume pass only (``config.py:29``)."""
    buffer_per_program_tokens: int = 100
    """Decode headroom reserved per active program (``state.py:23``)."""
    wait_timeout_s: float = 1800.0
    """A waiting request forces its program back after this long (``router.py:846``)."""

    def __post_init__(self) -> None:
        for name in ("scheduler_interval_s", "wait_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"ThunderAgentConfig.{name} must be positive, got {value!r}")
        weight = self.acting_token_weight
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"ThunderAgentConfig.acting_token_weight must be >= 0, got {weight!r}"
            )
        if not isinstance(self.use_acting_token_decay, bool):
            raise ConfigError(
                "ThunderAgentConfig.use_acting_token_decay must be a bool, "
                f"got {self.use_acting_token_decay!r}"
            )
        buffer = self.buffer_per_program_tokens
        if not isinstance(buffer, int) or buffer < 0:
            raise ConfigError(
                f"ThunderAgentConfig.buffer_per_program_tokens must be an int >= 0, got {buffer!r}"
            )


def pending(program: Program) -> bool:
    """ThunderAgent's REASONING: a request is pending (in flight or waiting)."""
    return bool(program.in_flight or program.held)


class ThunderAgentPolicy(BasePolicy):
    name = "thunderagent"
    pauses = True
    acting_half_life_s = None

    def __init__(self, config: ThunderAgentConfig | None = None) -> None:
        self.config = config or ThunderAgentConfig()
        self._next_tick_at = -math.inf
        self._paused_tokens: dict[str, int] = {}
        """Waiting program -> its tokens when first seen waiting (``PausedInfo``)."""

    # -- the capacity estimate ------------------------------------------------------------------

    def _active_tokens(self, programs: list[Program]) -> float:
        """``active_program_tokens`` (``state.py:101-104``)."""
        weight = self.config.acting_token_weight
        return sum(p.context_tokens * (1.0 if pending(p) else weight) for p in programs)

    def remaining(self, ledger: BackendLedger, programs: list[Program]) -> float:
        """``remaining_capacity`` (``state.py:182-191``); ``shared_tokens`` is always 0."""
        buffer = len(programs) * self.config.buffer_per_program_tokens
        return ledger.capacity_tokens - (self._active_tokens(programs) + buffer)

    def _remaining_with_decay(
        self, ledger: BackendLedger, programs: list[Program], now: float
    ) -> float:
        """``remaining_capacity_with_decay`` (``state.py:193-211``): acting tokens x 2**-t,
        t in seconds since the response ended, without the acting weight."""
        used = 0.0
        for p in programs:
            if pending(p) or p.acting_since is None:
                used += p.context_tokens
            else:
                used += p.context_tokens * 2.0 ** -max(0.0, now - p.acting_since)
        buffer = len(programs) * self.config.buffer_per_program_tokens
        return ledger.capacity_tokens - (used + buffer)

    # -- hooks -------------------------------------------------------------------------------

    def place(self, program: Program, view: PolicyView) -> str | None:
        healthy = view.healthy()
        if view.forced or view.restoring:
            previous = view.backends().get(program.backend) if program.backend else None
            if previous is not None and previous.healthy and previous.capacity_tokens > 0:
                return previous.name
            return self._fewest_programs(view)
        if view.waiting_count > 0:
            return None  # router.py:264: wait behind the queue
        required = program.context_tokens + self.config.buffer_per_program_tokens
        best: str | None = None
        best_tokens = math.inf
        for ledger in healthy:
            programs = view.programs_on(ledger.name)
            if self.remaining(ledger, programs) < required:
                continue
            tokens = self._active_tokens(programs)
            if tokens < best_tokens:
                best, best_tokens = ledger.name, tokens
        return best

    def _fewest_programs(self, view: PolicyView) -> str | None:
        """``select_backend_for_new_program_default`` (``router.py:171-191``)."""
        best: str | None = None
        best_count = math.inf
        for ledger in view.healthy():
            count = len(ledger.charges)
            if count < best_count:
                best, best_count = ledger.name, count
        return best

    def pause_key(self, program: Program) -> tuple[float, ...] | None:
        return None  # no per-event overflow relief: pauses happen on the tick

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        return ActingWeight(WeightMode.FULL)

    def next_decision_at(self, control: SchedulerControl, now: float) -> float | None:
        return self._next_tick_at if math.isfinite(self._next_tick_at) else None

    def decide(self, control: SchedulerControl, now: float) -> None:
        expire_leases(control, now)
        control.take_touched_backends()  # events change nothing until the tick
        if self._next_tick_at == -math.inf:
            self._next_tick_at = now + self.config.scheduler_interval_s  # sleep, then check
        elif now >= self._next_tick_at:
            while self._next_tick_at <= now:
                self._next_tick_at += self.config.scheduler_interval_s
            self._tick(control, now)
        control.pass_done()

    # -- the tick ------------------------------------------------------------------------------

    def _tick(self, ctl: SchedulerControl, now: float) -> None:
        ctl.count("policy_ticks")
        waiting = ctl.waiting()
        seen = {p.program_id for p in waiting}
        for program_id in [pid for pid in self._paused_tokens if pid not in seen]:
            del self._paused_tokens[program_id]
        for program in waiting:
            self._paused_tokens.setdefault(program.program_id, program.context_tokens)
        self._force_timed_out(ctl, waiting, now)
        self._greedy_resume(ctl, now)
        for ledger in ctl.ledgers():
            if ledger.healthy and ledger.capacity_tokens > 0:
                self._pause_until_safe(ctl, ledger, now)

    def _force_timed_out(self, ctl: SchedulerControl, waiting: list[Program], now: float) -> None:
        for program in waiting:
            if not program.held:
                continue  # no request waits: never forced (defect kept)
            if min(program.held.values()) + self.config.wait_timeout_s > now:
                continue
            backend = ctl.place(program, now, restoring=True, forced=True)
            if backend is None:
                continue
            ctl.count("forced_restores")
            ctl.resume(program, backend, now)

    def _greedy_resume(self, ctl: SchedulerControl, now: float) -> None:
        buffer = self.config.buffer_per_program_tokens
        caps: list[list[float | str]] = []
        total = 0.0
        for ledger in ctl.ledgers():
            if not ledger.healthy or ledger.capacity_tokens <= 0:
                continue
            programs = ctl.programs_on(ledger.name)
            if self.config.use_acting_token_decay:
                room = self._remaining_with_decay(ledger, programs, now)
            else:
                room = self.remaining(ledger, programs)
            if room > buffer:
                caps.append([room, ledger.name])
                total += room
        if not caps:
            return
        waiting = sorted(
            ctl.waiting(), key=lambda p: self._paused_tokens.get(p.program_id, p.context_tokens)
        )
        first_step = [p for p in waiting if p.requests == 1]
        reasoning = [p for p in waiting if p.requests != 1 and pending(p)]
        acting = [p for p in waiting if p.requests != 1 and not pending(p)]
        chosen: list[Program] = []
        cumulative = 0.0
        for program in reasoning + first_step + acting:
            required = program.context_tokens + buffer
            if cumulative + required <= total:
                chosen.append(program)
                cumulative += required
        if not chosen:
            return
        chosen.sort(key=lambda p: -p.context_tokens)
        caps.sort(key=lambda c: -float(c[0]))
        smallest = chosen[-1].context_tokens + buffer
        for program in chosen:
            if not caps:
                break
            required = program.context_tokens + buffer
            room = float(caps[0][0])
            if smallest > room:
                break
            if required > room:
                continue
            ctl.resume(program, str(caps[0][1]), now)
            self._paused_tokens.pop(program.program_id, None)
            left = room - required
            if left > buffer:
                caps[0][0] = left
                caps.sort(key=lambda c: -float(c[0]))
            else:
                caps.pop(0)

    def _pause_until_safe(self, ctl: SchedulerControl, ledger: BackendLedger, now: float) -> None:
        programs = ctl.programs_on(ledger.name)
        remaining = self.remaining(ledger, programs)
        if remaining >= 0:
            return
        acting = sorted(
            (p for p in programs if not pending(p)), key=lambda p: (p.context_tokens, p.seq)
        )
        reasoning = sorted(
            (p for p in programs if pending(p) and not p.marked),
            key=lambda p: (p.context_tokens, p.seq),
        )
        weight = self.config.acting_token_weight
        buffer = self.config.buffer_per_program_tokens
        for program in acting:
            if remaining >= 0:
                return
            ctl.pause(program, now, reason="overflow")
            remaining += program.context_tokens * weight + buffer
        for program in reasoning:
            if remaining >= 0:
                return
            ctl.mark(program, now)  # remaining unchanged: every reasoning program is marked


__all__ = ["ThunderAgentConfig", "ThunderAgentPolicy"]
