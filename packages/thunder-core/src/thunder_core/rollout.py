"""RL rollout batches as Thunder programs: one program per trajectory, tagged with its batch,
group and sample.

In agentic RL a step starts a whole batch at once (prompts x samples per prompt; the samples of
one prompt form a GRPO group and share its prefix), every trajectory is a multi-turn agent
program, and the step ends when the last one ends. :class:`RolloutBatch` starts the batch's
programs through the lifecycle API (after opening the batch with its size,
``POST /v1/rollouts``) with the tags ``rollout``, ``rollout_group`` and ``rollout_sample``
(``thunder_core.contract``), hands out their ids (send one as the
``X-Thunder-Program-Id`` header, or the ``program_id`` body field of ``/generate``), and ends
them: one by one as trajectories finish, or all that are left at once (:meth:`cut`, for
partial rollouts: they end ``cancelled``, and the ids come back).

    with ThunderClient("http://scheduler:8300") as client:
        batch = RolloutBatch(client, "step-7", groups=8, samples=4).start()
        for group, sample in batch.samples():
            pid = batch.program_id(group, sample)
            ...  # requests with extra_headers=batch.headers(group, sample)
            batch.finish(group, sample)
        batch.cut()  # whatever is left (nothing, here)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self

from thunder_core.client import ThunderClient
from thunder_core.contract import (
    PROGRAM_ID_HEADER,
    ROLLOUT_GROUP_TAG,
    ROLLOUT_SAMPLE_TAG,
    ROLLOUT_TAG,
    ProgramEndStatus,
    validate_program_id,
)

__all__ = ["CUT_REASON", "RolloutBatch"]

CUT_REASON = "rollout cut"
"""The end reason of the programs :meth:`RolloutBatch.cut` ends."""


class RolloutBatch:
    """One rollout batch of ``groups`` x ``samples`` programs (see the module docstring).

    Program ids are ``<batch_id>-g<group>-s<sample>``: ``batch_id`` must make them valid
    program ids (``ValueError`` otherwise), and unique among the scheduler's live programs.
    """

    def __init__(self, client: ThunderClient, batch_id: str, *, groups: int, samples: int,
                 framework: str = "other", priority: int = 0) -> None:
        if groups < 1 or samples < 1:
            raise ValueError(f"groups and samples must be >= 1, got {groups} and {samples}")
        validate_program_id(self._id(batch_id, groups - 1, samples - 1))
        self.client = client
        self.batch_id = batch_id
        self.groups = groups
        self.samples_per_group = samples
        self.framework = framework
        self.priority = priority
        self._open: set[str] = set()
        self._started = False

    @staticmethod
    def _id(batch_id: str, group: int, sample: int) -> str:
        return f"{batch_id}-g{group}-s{sample}"

    def samples(self) -> Iterator[tuple[int, int]]:
        """Every (group, sample) of the batch, group by group."""
        for group in range(self.groups):
            for sample in range(self.samples_per_group):
                yield group, sample

    def program_id(self, group: int, sample: int) -> str:
        if not (0 <= group < self.groups and 0 <= sample < self.samples_per_group):
            raise IndexError(f"no sample ({group}, {sample}) in a batch of {self.groups} "
                             f"groups x {self.samples_per_group} samples")
        return self._id(self.batch_id, group, sample)

    def program_ids(self) -> list[str]:
        return [self.program_id(group, sample) for group, sample in self.samples()]

    def headers(self, group: int, sample: int) -> dict[str, str]:
        """The header that attributes a request to the sample's program."""
        return {PROGRAM_ID_HEADER: self.program_id(group, sample)}

    @property
    def open_ids(self) -> list[str]:
        """Programs started and not yet ended, in batch order."""
        return [pid for pid in self.program_ids() if pid in self._open]

    def start(self) -> Self:
        """Start every program of the batch, tagged; returns the batch."""
        if self._started:
            raise RuntimeError(f"rollout batch {self.batch_id!r} already started")
        self._started = True
        self.client.open_rollout(self.batch_id, size=self.groups * self.samples_per_group)
        for group, sample in self.samples():
            pid = self.program_id(group, sample)
            self.client.start_program(pid, framework=self.framework, priority=self.priority,
                                      tags={ROLLOUT_TAG: self.batch_id,
                                            ROLLOUT_GROUP_TAG: str(group),
                                            ROLLOUT_SAMPLE_TAG: str(sample)})
            self._open.add(pid)
        return self

    def finish(self, group: int, sample: int, *,
               status: ProgramEndStatus | str = ProgramEndStatus.OK,
               reason: str | None = None) -> None:
        """The sample's trajectory ended: end its program (once; again is a no-op)."""
        pid = self.program_id(group, sample)
        if pid not in self._open:
            return
        self._open.discard(pid)
        self.client.end_program(pid, status=status, reason=reason)

    def cut(self) -> list[str]:
        """End every program still open as ``cancelled`` (partial rollout); their ids."""
        cut = self.open_ids
        for pid in cut:
            self._open.discard(pid)
            self.client.end_program(pid, status=ProgramEndStatus.CANCELLED, reason=CUT_REASON)
        return cut

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cut()
