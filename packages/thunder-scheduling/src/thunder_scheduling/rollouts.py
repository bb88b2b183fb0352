"""Rollout batches: RL trajectories as programs of one batch, in groups sharing a prompt.

A program belongs to a batch when its ``ProgramStarted.tags`` carry ``rollout`` (the batch
id), ``rollout_group`` and ``rollout_sample`` (``thunder_core.contract``; the
``thunder_core.RolloutBatch`` helper sends them). A program without them is never a member
and nothing here touches it. ``RolloutStarted`` may open a batch first, with its size and an
optional cut-off; otherwise the first tagged program opens it and the size is the number of
members seen. The rules (docs/scheduling.md, "Rollout batches"):

* **Group-aware placement** (``group_backend``; policies with ``rollout_aware``): a new
  program whose group already runs somewhere goes where most of its siblings' KV is (their
  prompt's prefix is cached there), as long as it ``fits`` under the low watermark and the
  group's weight there stays within the group's **fair share**: ``low_watermark x the healthy
  fleet's capacity x live members of the group / live members of the batch``. Otherwise the
  next sibling backend by weight is tried, then (spill) the roomiest backend the group is not
  on yet where it fits; if none, the policy places it. The first sample of a group is placed
  by the policy like any program.
* **Stragglers** (``is_straggler``; policies with ``rollout_aware``): once more than
  ``rollout_drain_fraction`` (default 0.5) of a batch's programs have ended, the batch is
  *draining*: its live programs come first in the restore order, last in the pause order, and
  get ``rollout_priority_boost`` (default 100) added to their engine priority while active.
  The tail of a batch is what delays the training step; this keeps it short.
* **Cut-off** (every policy): ``RolloutCut`` or, with ``cut_fraction`` set, the batch's
  ended count reaching ``cut_fraction x size`` releases every live member
  (``Release(reason="rollout_cut")``, the driver aborts their in-flight requests); the cut ids
  are reported by ``ProgramScheduler.rollout(batch)``.

The book keeps member ids and counts only; programs are read from the scheduler's table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from thunder_core.contract import (
    ROLLOUT_GROUP_TAG,
    ROLLOUT_SAMPLE_TAG,
    ROLLOUT_TAG,
    ProgramEndStatus,
    ProgramStatus,
)
from thunder_scheduling.policy import PolicyView, fits
from thunder_scheduling.program_table import Program

if TYPE_CHECKING:
    from thunder_scheduling.control import SchedulerControl

CUT_REASON = "rollout_cut"
"""``Release.reason`` of a program ended by a batch's cut-off."""


@dataclass(frozen=True, slots=True)
class RolloutMembership:
    """Where a program sits in a rollout batch (from its start tags)."""

    rollout: str
    group: str
    sample: str


def membership(tags: Mapping[str, str]) -> RolloutMembership | None:
    """The program's batch, group and sample from its start tags; ``None`` when it has no
    ``rollout`` tag. A missing group or sample tag puts it in group/sample ``""``."""
    rollout = tags.get(ROLLOUT_TAG)
    if not rollout:
        return None
    return RolloutMembership(
        rollout, tags.get(ROLLOUT_GROUP_TAG, ""), tags.get(ROLLOUT_SAMPLE_TAG, "")
    )


@dataclass(slots=True)
class RolloutBatchState:
    """One batch: its members (in join order), which ended, and whether it was cut."""

    rollout: str
    started_at: float
    size: int | None = None
    """Declared by ``RolloutStarted``; ``None``: the members seen so far."""
    cut_fraction: float | None = None
    members: dict[str, RolloutMembership] = field(default_factory=dict)
    ended: dict[str, None] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    draining: bool = False
    cut_due: bool = False
    cut: list[str] = field(default_factory=list)
    """Programs the cut-off ended, in member order."""

    @property
    def num_programs(self) -> int:
        return max(self.size or 0, len(self.members))

    @property
    def num_live(self) -> int:
        return len(self.members) - len(self.ended)

    @property
    def ended_fraction(self) -> float:
        return len(self.ended) / self.num_programs if self.num_programs else 0.0

    def live(self) -> list[str]:
        return [pid for pid in self.members if pid not in self.ended]


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """What ``ProgramScheduler.rollout`` reports about one batch."""

    rollout: str
    num_programs: int
    num_ended: int
    draining: bool
    cut_program_ids: tuple[str, ...]
    live_program_ids: tuple[str, ...]


class RolloutBook:
    """Every batch the scheduler has seen, and which batch each member program is in."""

    __slots__ = ("_batch_of", "batches", "drain_fraction")

    def __init__(self, drain_fraction: float) -> None:
        self.drain_fraction = drain_fraction
        self.batches: dict[str, RolloutBatchState] = {}
        self._batch_of: dict[str, RolloutBatchState] = {}

    def open(
        self, rollout: str, now: float, size: int | None, cut_fraction: float | None
    ) -> RolloutBatchState:
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"rollout {rollout!r}: size must be an int >= 1, got {size!r}")
        if cut_fraction is not None and not (
            isinstance(cut_fraction, int | float) and 0 < cut_fraction <= 1
        ):
            raise ValueError(
                f"rollout {rollout!r}: cut_fraction must be in (0, 1], got {cut_fraction!r}"
            )
        batch = self.batches.get(rollout)
        if batch is None:
            batch = self.batches[rollout] = RolloutBatchState(rollout, now)
        batch.size = size if size is not None else batch.size
        batch.cut_fraction = cut_fraction if cut_fraction is not None else batch.cut_fraction
        self._check_thresholds(batch)
        return batch

    def join(self, program_id: str, tags: Mapping[str, str], now: float) -> None:
        """Record a started program's membership (a program already in a batch stays)."""
        member = membership(tags)
        if member is None or program_id in self._batch_of:
            return
        batch = self.batches.get(member.rollout) or self.open(member.rollout, now, None, None)
        if program_id in batch.members:
            return  # a new incarnation of an ended trajectory is not a member again
        batch.members[program_id] = member
        batch.groups.setdefault(member.group, []).append(program_id)
        self._batch_of[program_id] = batch

    def ended(self, program_id: str) -> RolloutBatchState | None:
        """A member ended; returns its batch if this end made the batch start draining
        (its live members' keys must be re-read), else ``None``."""
        batch = self._batch_of.pop(program_id, None)
        if batch is None:
            return None
        batch.ended[program_id] = None
        was_draining = batch.draining
        self._check_thresholds(batch)
        return batch if batch.draining and not was_draining else None

    def _check_thresholds(self, batch: RolloutBatchState) -> None:
        if not batch.draining and batch.ended_fraction > self.drain_fraction:
            batch.draining = True
        if (
            batch.cut_fraction is not None
            and batch.num_live
            and not batch.cut
            and len(batch.ended) >= math.ceil(batch.cut_fraction * batch.num_programs - 1e-9)
        ):
            batch.cut_due = True

    def request_cut(self, rollout: str) -> None:
        batch = self.batches.get(rollout)
        if batch is None:
            raise ValueError(f"unknown rollout {rollout!r}")
        batch.cut_due = True

    def take_due_cuts(self) -> list[RolloutBatchState]:
        due = [batch for batch in self.batches.values() if batch.cut_due]
        for batch in due:
            batch.cut_due = False
        return due

    def batch_of(self, program_id: str) -> RolloutBatchState | None:
        """The live member's batch (``None`` for a program in no batch, or ended)."""
        return self._batch_of.get(program_id)

    def is_straggler(self, program_id: str) -> bool:
        """A live member of a draining batch."""
        batch = self._batch_of.get(program_id)
        return batch is not None and batch.draining

    def siblings(self, program_id: str) -> list[str]:
        """The other live members of the program's group."""
        batch = self._batch_of.get(program_id)
        if batch is None:
            return []
        group = batch.members[program_id].group
        return [
            pid for pid in batch.groups[group] if pid != program_id and pid not in batch.ended
        ]

    def prefix_group(self, program_id: str) -> str:
        """The prefix group of a live member (``rollout/group``: the siblings share their
        prompt), ``""`` for any other program (the common system prompt). The ledger counts
        the largest shared prefix of each group once per backend (``accounting.py``)."""
        batch = self._batch_of.get(program_id)
        if batch is None:
            return ""
        return f"{batch.rollout}/{batch.members[program_id].group}"

    def group_share(self, program_id: str) -> float:
        """The group's fair share of the fleet, as a fraction: its live members over the
        batch's live members (the program itself counted live)."""
        batch = self._batch_of.get(program_id)
        if batch is None or not batch.num_live:
            return 1.0
        group = batch.members[program_id].group
        live_in_group = sum(1 for pid in batch.groups[group] if pid not in batch.ended)
        return live_in_group / batch.num_live

    def status(self, rollout: str) -> RolloutStatus | None:
        batch = self.batches.get(rollout)
        if batch is None:
            return None
        return RolloutStatus(
            rollout,
            batch.num_programs,
            len(batch.ended),
            batch.draining,
            tuple(batch.cut),
            tuple(batch.live()),
        )


def apply_cuts(ctl: SchedulerControl, now: float) -> None:
    """The cut-off pass (before the policy's passes): every batch whose cut is due
    (``RolloutCut``, or its ``cut_fraction`` reached) has its live members released."""
    for batch in ctl.rollouts.take_due_cuts():
        live = batch.live()
        batch.cut.extend(live)
        for program_id in live:
            ctl.count("rollout_cut_programs")
            ctl.release(ctl.program(program_id), ProgramEndStatus.CANCELLED, CUT_REASON, now)


def group_backend(
    book: RolloutBook,
    program: Program,
    view: PolicyView,
    low_watermark: float,
    lookup: Callable[[str], Program],
) -> str | None:
    """Where a new member should go to reuse its group's prefix: the sibling backend with the
    most sibling weight where the program fits under ``low_watermark`` and the group stays
    within its fair share (module docstring); else (spill) the roomiest backend the group is not
    on where it fits; ``None``: no sibling runs, or nowhere qualifies (the policy places it)."""
    siblings = book.siblings(program.program_id)
    if not siblings:
        return None
    ledgers = view.backends()
    weight_on: dict[str, float] = {}
    for pid in siblings:
        sibling = lookup(pid)
        name = sibling.backend
        if sibling.status is not ProgramStatus.ACTIVE or name is None:
            continue
        ledger = ledgers.get(name)
        charge = None if ledger is None else ledger.charges.get(pid)
        if ledger is None or charge is None or not ledger.healthy:
            continue
        weight_on[name] = weight_on.get(name, 0.0) + ledger.weight(charge, view.now)
    if not weight_on:
        return None
    fleet_tokens = sum(ledger.capacity_tokens for ledger in view.healthy())
    share_tokens = low_watermark * fleet_tokens * book.group_share(program.program_id)
    for name in sorted(weight_on, key=lambda n: (-weight_on[n], n)):
        ledger = ledgers[name]
        if weight_on[name] + view.weight_on(program, ledger) > share_tokens:
            continue
        if fits(program, ledger, view, low_watermark):
            return name
    spill: str | None = None
    spill_room = 0.0
    for ledger in view.healthy():  # spill: the roomiest backend the group is not on yet
        if ledger.name in weight_on or not fits(program, ledger, view, low_watermark):
            continue
        room = low_watermark * ledger.capacity_tokens - ledger.committed_tokens(view.now)
        if spill is None or room > spill_room:
            spill, spill_room = ledger.name, room
    return spill


__all__ = [
    "CUT_REASON",
    "RolloutBatchState",
    "RolloutBook",
    "RolloutMembership",
    "RolloutStatus",
    "apply_cuts",
    "group_backend",
    "membership",
]
