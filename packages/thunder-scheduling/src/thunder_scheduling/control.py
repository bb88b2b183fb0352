"""``SchedulerControl``: what a decision pass may read and do, and nothing else.

The decision passes (``decisions.py``) and any policy that brings its own passes (a policy's
``decide`` hook, e.g. ``policies/thunderagent.py``) work through this object only. It is the
narrow face of the scheduler: reading (backends, programs, the ordered candidate
structures, the policy's placement) and acting (pause, mark, resume, prewarm, release). Every
action keeps the scheduler's invariants (accounting, held requests, the queue, commands out),
so a pass cannot leave the state half-changed. A new policy author reads this file to know
what a pass may touch.

Ordered scans (``pause_order``, ``restore_order``) hand out programs smallest key first and
must be closed (use them in a ``with`` block): what was taken and not acted on goes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from thunder_core.contract import ProgramEndStatus
from thunder_scheduling.accounting import BackendLedger
from thunder_scheduling.commands import Prewarm
from thunder_scheduling.config import SchedulerConfig
from thunder_scheduling.kv_tiers import KvTiers
from thunder_scheduling.policy import Policy, PolicyView
from thunder_scheduling.program_table import Program
from thunder_scheduling.queues import Entry, KeyedHeap
from thunder_scheduling.rollouts import RolloutBook

if TYPE_CHECKING:
    from thunder_scheduling.state import SchedulerState


class OrderedScan:
    """Programs of one ordered structure, smallest key first (a context manager)."""

    __slots__ = ("_heap", "_lookup", "_taken")

    def __init__(self, heap: KeyedHeap, lookup: SchedulerState) -> None:
        self._heap = heap
        self._lookup = lookup
        self._taken: list[Entry] = []

    def __enter__(self) -> OrderedScan:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Program]:
        while (program := self.next()) is not None:
            yield program

    def next(self) -> Program | None:
        entry = self._heap.pop_valid()
        if entry is None:
            return None
        self._taken.append(entry)
        return self._lookup._table_get(entry[2])

    def close(self) -> None:
        """Put back every entry taken whose program is still a member (idempotent)."""
        taken, self._taken = self._taken, []
        self._heap.push_back(taken)


class SchedulerControl:
    """The scheduler as a decision pass sees it (see the module docstring)."""

    __slots__ = ("_s",)

    def __init__(self, scheduler: SchedulerState) -> None:
        self._s = scheduler

    # -- reading ----------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._s.policy

    @property
    def config(self) -> SchedulerConfig:
        return self._s.config

    @property
    def rollouts(self) -> RolloutBook:
        """Rollout batches and their members (``rollouts.py``)."""
        return self._s._rollouts

    @property
    def tiers(self) -> KvTiers:
        """Where programs' KV is and each backend's host budget (``kv_tiers.py``)."""
        return self._s._tiers

    def ledger(self, backend: str) -> BackendLedger:
        return self._s._ledgers[backend]

    def ledgers(self) -> list[BackendLedger]:
        """Every known backend, healthy or not, in name order."""
        return [ledger for _name, ledger in sorted(self._s._ledgers.items())]

    def program(self, program_id: str) -> Program:
        return self._s._table_get(program_id)

    def programs_on(self, backend: str) -> list[Program]:
        """Active programs on ``backend`` (marked ones included), in the ledger's order."""
        return [self._s._table_get(pid) for pid in self._s._ledgers[backend].charges]

    def weight_if_active(self, program: Program, ledger: BackendLedger, now: float) -> float:
        """What the program would weigh on ``ledger`` if it were active there now."""
        return self._s._weight_if_active(program, ledger, now)

    def view(self, now: float, restoring: bool = False, forced: bool = False) -> PolicyView:
        """The read-only view the policy's hooks get."""
        return self._s._view(now, restoring, forced)

    def place(
        self, program: Program, now: float, restoring: bool, forced: bool = False
    ) -> str | None:
        """The policy's placement (checked: a healthy backend or ``None``)."""
        return self._s._place(program, now, restoring, forced)

    def take_touched_backends(self) -> list[str]:
        """Backends an event touched since the last pass, in name order; the set is cleared."""
        names = sorted(self._s._dirty)
        self._s._dirty.clear()
        return names

    @property
    def room_may_have_grown(self) -> bool:
        """Something since the last pass may have freed room (a pause, an end, a response)."""
        return self._s._room_changed

    def restore_scan_due(self, now: float) -> bool:
        """Whether a restore scan should run now: room may have grown, or ``tick_s / 10``
        passed since the last one. Answering True starts the next interval."""
        s = self._s
        if not (s._room_changed or now >= s._next_scan_at):
            return False
        s._next_scan_at = now + s.config.tick_s / 10
        return True

    def pass_done(self) -> None:
        """The passes of one decision are over (clears ``room_may_have_grown``)."""
        self._s._room_changed = False

    # -- candidates -------------------------------------------------------------------------

    def due_weight_switches(self, now: float) -> Iterator[Program]:
        """Programs whose acting-weight deadline is at or before ``now`` (each once)."""
        deadlines = self._s._deadlines
        while True:
            entry = deadlines.pop_valid()
            if entry is None:
                return
            if entry[0][0] > now:
                deadlines.push_back([entry])
                return
            deadlines.discard(entry[2])
            yield self._s._table_get(entry[2])

    def idle_past_lease(self, now: float) -> list[Program]:
        """Programs with nothing in flight or held and no event for their lease."""
        expired: list[Program] = []
        for lease_s, group in self._s._leases.items():
            for program_id, last in group.items():
                if last + lease_s > now:
                    break
                expired.append(self._s._table_get(program_id))
        return expired

    def pause_order(self, backend: str) -> OrderedScan:
        """Unmarked active programs on ``backend`` in the policy's ``pause_key`` order."""
        return OrderedScan(self._s._pause_heaps[backend], self._s)

    def restore_order(self) -> OrderedScan:
        """The waiting queue in the policy's ``restore_key`` order."""
        return OrderedScan(self._s._waiting.heap, self._s)

    def waiting_count(self) -> int:
        return len(self._s._waiting)

    def waiting(self) -> list[Program]:
        """Every waiting program in wait order (oldest first): O(n), for tick-based policies."""
        return [self._s._table_get(pid) for pid in self._s._waiting.fifo_ids()]

    def oldest_waiting(self) -> tuple[Program, float] | None:
        """The longest waiter and when its wait began."""
        oldest = self._s._waiting.oldest()
        return None if oldest is None else (self._s._table_get(oldest[0]), oldest[1])

    def aged(self, now: float) -> list[Program]:
        """Waiters whose aging deadline (``Policy.aging_deadline``) is at or before ``now``,
        earliest first: O(result log n)."""
        heap = self._s._aging
        found: list[Program] = []
        taken = []
        while (entry := heap.pop_valid()) is not None:
            taken.append(entry)
            if entry[0][0] > now:
                break
            found.append(self._s._table_get(entry[2]))
        heap.push_back(taken)
        return found

    def next_aging_deadline(self) -> float | None:
        heap = self._s._aging
        entry = heap.pop_valid()
        if entry is None:
            return None
        heap.push_back([entry])
        return entry[0][0]

    # -- acting -----------------------------------------------------------------------------

    def apply_weight_switch(self, program: Program, now: float) -> bool | None:
        """Switch an acting program to its scheduled weight; True if it should be prewarmed
        (it was paused since its last request); ``None`` (nothing done) if it left the tool."""
        return self._s._apply_weight_switch(program, now)

    def pause(self, program: Program, now: float, reason: str) -> None:
        """Pause an active program with nothing in flight (``Pause``; it joins the queue)."""
        self._s._pause(program, now, reason)

    def mark(self, program: Program, now: float) -> None:
        """Mark an active program with a request in flight: paused when its response ends,
        its new requests held meanwhile; it stops counting as committed at once."""
        self._s._mark(program, now)

    def unmark(self, program: Program, now: float) -> None:
        """Cancel a mark (its held requests are admitted)."""
        self._s._unmark(program, now)

    def pause_or_mark(self, program: Program, now: float, reason: str = "overflow") -> None:
        if program.in_flight:
            self.mark(program, now)
        else:
            self.pause(program, now, reason)

    def resume(self, program: Program, backend: str, now: float) -> None:
        """Make a waiting program active on ``backend`` (``Resume`` if it had run; its held
        requests are admitted)."""
        self._s._resume(program, backend, now)

    def prewarm(self, program: Program, backend: str) -> None:
        """Ask the engine to prefill the program's context ahead of its next request."""
        self._s._count("prewarms")
        self._s._out.append(Prewarm(program.program_id, backend))

    def release(self, program: Program, status: ProgramEndStatus, reason: str, now: float) -> None:
        """End a program (``Release``; its held requests are named for failing)."""
        self._s._terminate(program, status, reason, now)

    def count(self, name: str, amount: float = 1) -> None:
        """Add to one of the scheduler's counters (snapshot and metrics)."""
        self._s._count(name, amount)

    def mark_touched(self, backend: str) -> None:
        """Have the next pass look at ``backend`` again."""
        self._s._dirty[backend] = None


__all__ = ["OrderedScan", "SchedulerControl"]
