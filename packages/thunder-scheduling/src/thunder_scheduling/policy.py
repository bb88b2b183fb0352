"""The policy plug-in interface: what a scheduling policy decides, and what it sees.

The scheduler (``scheduler.py``) owns the state machine, accounting, held requests, leases,
aging and every invariant. A policy only *chooses*; it never mutates anything and never
returns commands. One policy per module in ``policies/``; the module name, the policy's
``name`` and the configuration value are the same string; its config dataclass sits beside
it and validates itself in ``__post_init__``.

A policy answers these questions (all have defaults in :class:`BasePolicy`):

``place(program, view) -> backend | None``
    Where a program that needs a backend goes now: a new program's first request, or a
    paused program being restored (``view.restoring``), or one forced back by aging
    (``view.forced``: the scheduler makes room itself, answer with the preferred backend).
    ``None``: not now (its requests stay held; it waits in the global queue).
``restore_key(program) -> tuple``
    Order of the global waiting queue (paused and not-yet-placed programs); smallest first.
    Must depend only on the program's fields (re-read after each event on that program).
``pause_key(program) -> tuple | None``
    Order in which active programs on an overflowing backend are paused, smallest first;
    ``None``: never pause this program. Only read when ``pauses`` is True.
``acting_weight(program, view) -> ActingWeight``
    How an acting program (outside the LLM) is weighed in the accounting, and whether the
    weight switches at a deadline (anticipated return, pin expiry).
``engine_priority(program, view) -> int | None``
    Engine priority for the program's requests (higher runs first, the contract's convention;
    the backend maps it to the engine's). ``None``: leave the engine default.
``route_request(program, request, view) -> backend | None`` (only when ``routes_requests``)
    Request-level routing, for the gateway baselines that know no programs (round-robin, the
    SGLang router's cache-aware): called on every ``RequestArrived`` of an active, unmarked
    program; the program's charge follows the request to the chosen backend. ``None``: fall
    back to ``place`` (no healthy backend: the request is held until one is).
``request_finished(program_id, request_id)`` (only when ``routes_requests``)
    Called on every ``RequestFinished`` (even for a program already ended), so a router can
    release the load it counted for the request.
``backend_flushed(backend)``
    The backend's KV cache was emptied (a weight update, ``BackendFlushed``): forget what the
    policy assumed cached there (a router's prefix tree). Default: nothing to forget.
``decide(control, now)``
    The decision passes run after every event and tick. The default runs ``decisions.py``
    (overflow relief, aging, restores, all driven by the hooks above); a policy whose
    algorithm does not fit them (a fixed tick, a bin-packing restore) brings its own, working
    through ``SchedulerControl`` (``control.py``: the only things a pass may read and do).
``pause_tier(program, view) -> KvTier``
    Where a program being paused keeps its KV (``kv_tiers.py``): host where its backend has
    a host tier with room, else gone (the default); the scheduler tracks it.
``aging_deadline(started_at, paused_since, paused_before_s, max_paused_s) -> float``
    When the scheduler's aging forces a waiting program back (room made for it). Default:
    ``max_paused_s`` after the wait began; must depend only on these numbers.
``next_decision_at(control, now) -> float | None``
    When the passes next need a ``tick`` even if nothing happens (``None``: never). The
    default: the aging bound of the oldest waiter, and ``tick_s`` from now while any wait.

Attributes: ``rollout_aware`` (the scheduler adds the rollout-batch rules of ``rollouts.py``
to this policy's placement and keys; comparison baselines leave it False), ``pauses``
(overflow pausing on), ``high_watermark`` / ``low_watermark``
(fractions of capacity: pause when committed use exceeds high, pause down to low, admit and
restore only up to low), ``acting_half_life_s`` (the half-life of ``WeightMode.DECAYING``),
``routes_requests`` (call ``route_request`` per request; program-aware policies leave it
False so a program sticks to its backend), ``restore_scan_limit`` (how many consecutive
queue entries may fail to place before a restore pass stops; 1 = strict head-of-line
FCFS), ``promote_after_s`` (programs waiting longer are offered first, oldest first:
anti-starvation), ``restore_needs_fit`` (a promise: on a restore that is not forced, ``place``
returns a backend only if the program ``fits`` it under ``low_watermark``; the scheduler
then counts a queue entry that fits no healthy backend as a failure without calling
``place``, which keeps a restore pass cheap with thousands waiting),
``arrivals_join_queue`` (while any program waits, a new program's first request joins the
waiting queue and the restore pass of the same decision places it in ``restore_key`` order,
promoted waiters first, instead of the arrival taking room ahead of them; ThunderAgent assigns
a new program directly only when its queue is empty).

``PolicyView`` carries every input (time, backends, queue, tool estimates) so a policy can
gain an input without any signature changing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from thunder_core.contract import ProgramPhase
from thunder_scheduling.accounting import BackendLedger, WeightMode
from thunder_scheduling.events import RequestArrived
from thunder_scheduling.kv_tiers import KvTier, KvTiers
from thunder_scheduling.program_table import Program

if TYPE_CHECKING:
    from thunder_scheduling.control import SchedulerControl


@dataclass(frozen=True, slots=True)
class ActingWeight:
    """Weight of an acting program: ``mode`` now, ``then`` from ``switch_at`` on."""

    mode: WeightMode
    switch_at: float | None = None
    then: WeightMode = WeightMode.FULL
    prewarm_at_switch: bool = False
    """At the switch, emit ``Prewarm`` if the program was paused since its last request, or
    its KV was offloaded to host (``tier``)."""
    tier: KvTier | None = None
    """Where the program's KV goes while it acts (``kv_tiers.py``): ``HOST`` offloads it
    (it weighs nothing on the device until its request or the switch), ``GONE`` lets it go;
    ``None`` / ``DEVICE``: it stays where it is."""


class PolicyView:
    """What a policy may read at one decision. Read-only by convention."""

    __slots__ = (
        "_charge",
        "_count",
        "_estimate",
        "_head",
        "_ledgers",
        "_programs_on",
        "forced",
        "now",
        "prewarm_lead_s",
        "restoring",
        "tiers",
    )

    def __init__(
        self,
        now: float,
        ledgers: Mapping[str, BackendLedger],
        charge: Callable[[Program, BackendLedger, float], float],
        estimate: Callable[[str], float | None],
        waiting_head: Callable[[], str | None],
        waiting_count: Callable[[], int],
        restoring: bool = False,
        forced: bool = False,
        prewarm_lead_s: float = 0.0,
        programs_on: Callable[[str], list[Program]] | None = None,
        tiers: KvTiers | None = None,
    ) -> None:
        self.now = now
        self.tiers = tiers if tiers is not None else KvTiers()
        """Where programs' KV is and each backend's host budget (read-only)."""
        self._programs_on = programs_on
        self.prewarm_lead_s = prewarm_lead_s
        self._ledgers = ledgers
        self._charge = charge
        self._estimate = estimate
        self._head = waiting_head
        self._count = waiting_count
        self.restoring = restoring
        self.forced = forced

    def backends(self) -> Mapping[str, BackendLedger]:
        """All known backends by name (healthy or not)."""
        return self._ledgers

    def healthy(self) -> list[BackendLedger]:
        """Healthy backends with capacity, in name order (deterministic)."""
        return [
            ledger
            for name, ledger in sorted(self._ledgers.items())
            if ledger.healthy and ledger.capacity_tokens > 0
        ]

    def weight_on(self, program: Program, ledger: BackendLedger) -> float:
        """Tokens the program would weigh on ``ledger`` if it were active there now."""
        return self._charge(program, ledger, self.now)

    @property
    def waiting_count(self) -> int:
        """Programs in the global waiting queue (paused or not yet placed)."""
        return self._count()

    def waiting_head(self) -> str | None:
        """The first program of the waiting queue in the policy's restore order."""
        return self._head() if self.waiting_count else None

    def tool_estimate_s(self, tool_name: str) -> float | None:
        return self._estimate(tool_name)

    def programs_on(self, backend: str) -> list[Program]:
        """Active programs on ``backend`` (marked ones included): O(n), for policies whose
        estimate is a sum over programs rather than the ledger's weights."""
        return [] if self._programs_on is None else self._programs_on(backend)


class Policy(Protocol):
    name: str
    pauses: bool
    high_watermark: float
    low_watermark: float
    acting_half_life_s: float | None
    restore_scan_limit: int
    promote_after_s: float | None
    restore_needs_fit: bool
    arrivals_join_queue: bool
    routes_requests: bool
    reads_prompt_blocks: bool
    rollout_aware: bool

    def place(self, program: Program, view: PolicyView) -> str | None: ...

    def restore_key(self, program: Program) -> tuple[float, ...]: ...

    def pause_key(self, program: Program) -> tuple[float, ...] | None: ...

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight: ...

    def engine_priority(self, program: Program, view: PolicyView) -> int | None: ...

    def pause_tier(self, program: Program, view: PolicyView) -> KvTier: ...

    def route_request(
        self, program: Program, request: RequestArrived, view: PolicyView
    ) -> str | None: ...

    def request_finished(self, program_id: str, request_id: str) -> None: ...

    def backend_flushed(self, backend: str) -> None: ...

    def decide(self, control: SchedulerControl, now: float) -> None: ...

    def aging_deadline(
        self, started_at: float, paused_since: float, paused_before_s: float, max_paused_s: float
    ) -> float: ...

    def next_decision_at(self, control: SchedulerControl, now: float) -> float | None: ...


# -- helpers shared by policies ---------------------------------------------------------------


def free_room(ledger: BackendLedger, now: float, watermark: float) -> float:
    """Tokens left under ``watermark * capacity`` not counting programs marked for pause."""
    return watermark * ledger.capacity_tokens - ledger.committed_tokens(now)


def fits(program: Program, ledger: BackendLedger, view: PolicyView, watermark: float) -> bool:
    """Room for the program under the watermark; a program bigger than the watermark fits
    only a backend with no other (unmarked) active program: it runs alone."""
    weight = view.weight_on(program, ledger)
    limit = watermark * ledger.capacity_tokens
    if weight > limit:
        return ledger.unmarked_count() == 0
    return ledger.committed_tokens(view.now) + weight <= limit


def most_free(view: PolicyView, watermark: float = 1.0) -> BackendLedger | None:
    """The healthy backend with the most room (ties: name order)."""
    best: BackendLedger | None = None
    best_room = 0.0
    for ledger in view.healthy():
        room = free_room(ledger, view.now, watermark)
        if best is None or room > best_room:
            best, best_room = ledger, room
    return best


def best_fit(program: Program, view: PolicyView, watermark: float) -> BackendLedger | None:
    """The healthy backend where the program fits leaving the least room (ties: name)."""
    best: BackendLedger | None = None
    best_left = 0.0
    for ledger in view.healthy():
        if not fits(program, ledger, view, watermark):
            continue
        left = free_room(ledger, view.now, watermark) - view.weight_on(program, ledger)
        if best is None or left < best_left:
            best, best_left = ledger, left
    return best


def stay_else_least_committed(
    program: Program, view: PolicyView, watermark: float
) -> str | None:
    """The program's previous backend while it fits there (forced: while healthy), else the
    healthy backend with the least committed tokens where it fits (forced: the least
    committed one): a least-loaded router in front of single-engine schedulers."""
    previous = view.backends().get(program.backend) if program.backend else None
    if previous is not None and previous.healthy and previous.capacity_tokens > 0 and (
        view.forced or fits(program, previous, view, watermark)
    ):
        return previous.name
    ranked = sorted(view.healthy(), key=lambda b: b.committed_tokens(view.now))
    if view.forced:
        return ranked[0].name if ranked else None
    return next((b.name for b in ranked if fits(program, b, view, watermark)), None)


class BasePolicy:
    """Defaults for every hook: sticky placement, no pausing, FIFO queue, full weights."""

    name = "base"
    pauses = False
    high_watermark = 1.0
    low_watermark = 1.0
    acting_half_life_s: float | None = None
    restore_scan_limit = 16
    promote_after_s: float | None = None
    restore_needs_fit = False
    """Sticky ``place`` returns the previous backend whether or not the program fits."""
    arrivals_join_queue = False
    """False: a new program is placed on arrival when ``place`` finds room, ahead of any
    waiter (promoted ones included)."""
    routes_requests = False
    rollout_aware = False
    """True: the scheduler applies the rollout-batch rules (``rollouts.py``: group-aware
    placement of new programs, stragglers first) on top of this policy's hooks."""
    reads_prompt_blocks = False
    """True when the policy reads ``RequestArrived.prompt_blocks`` (the driver computes the
    fingerprint only then, so other policies pay nothing for it)."""

    def place(self, program: Program, view: PolicyView) -> str | None:
        if program.backend is not None:
            previous = view.backends().get(program.backend)
            if previous is not None and previous.healthy and previous.capacity_tokens > 0:
                return previous.name
        best = most_free(view)
        return None if best is None else best.name

    def restore_key(self, program: Program) -> tuple[float, ...]:
        return (program.paused_since or 0.0, program.seq)

    def pause_key(self, program: Program) -> tuple[float, ...] | None:
        return None

    def acting_weight(self, program: Program, view: PolicyView) -> ActingWeight:
        return ActingWeight(WeightMode.FULL)

    def engine_priority(self, program: Program, view: PolicyView) -> int | None:
        return None

    def pause_tier(self, program: Program, view: PolicyView) -> KvTier:
        """Where a paused program's KV goes: to host where its backend has a host tier with
        room (the engine backs it up and keeps it there, LRU), else it is gone."""
        if view.tiers.host_room(program.backend, program.context_tokens):
            return KvTier.HOST
        return KvTier.GONE

    def route_request(
        self, program: Program, request: RequestArrived, view: PolicyView
    ) -> str | None:
        return None

    def request_finished(self, program_id: str, request_id: str) -> None:
        return None

    def aging_deadline(
        self, started_at: float, paused_since: float, paused_before_s: float, max_paused_s: float
    ) -> float:
        """When aging forces a waiting program back: ``max_paused_s`` after its wait began."""
        return paused_since + max_paused_s

    def backend_flushed(self, backend: str) -> None:
        """``backend``'s KV cache was emptied (``BackendFlushed``): forget what the policy
        assumed cached there. Default: the policy assumes nothing."""
        return None

    def decide(self, control: SchedulerControl, now: float) -> None:
        from thunder_scheduling.decisions import decide

        decide(control, now)

    def next_decision_at(self, control: SchedulerControl, now: float) -> float | None:
        from thunder_scheduling.decisions import next_decision_at

        return next_decision_at(control, now)


def is_reasoning(program: Program) -> bool:
    return program.phase is ProgramPhase.REASONING


__all__ = [
    "ActingWeight",
    "BasePolicy",
    "Policy",
    "PolicyView",
    "best_fit",
    "fits",
    "free_room",
    "is_reasoning",
    "most_free",
    "stay_else_least_committed",
]
