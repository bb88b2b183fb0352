"""RL rollout workload: batches of GRPO groups, a weight update between batches (virtual mode).

In agentic RL a training step starts a whole batch of trajectories at once: ``groups`` prompts
x ``samples`` samples per prompt (a GRPO group shares its prompt), every trajectory is a
multi-turn agent program with tool calls, the step ends when the last trajectory ends, and then
the weights change, so every cached prefix is stale. ``build_batches`` makes such batches from
the shared sessions and ``RolloutReplay`` plays them through the virtual replay.

**The rule** (``sibling``): batch ``b``'s group ``g`` replays session ``(b x groups + g) mod
len(sessions)`` (the fitted sessions in their seeded order); sample ``j`` of the group is that
session with

* **the first prompt shared**: step 0 is the session's first step as recorded (same prompt
  tokens, same block keys), so the siblings share their prompt's prefix;
* **everything after it private**: in every later prompt (subagents' included), a block key
  keeps its value only at positions where it equals the first prompt's key (the prefix the
  step shares with the first prompt); every other key moves to the sample's own key space
  (``(j + 1) << 24`` added to the key's session space), so a sample's later prompts share
  prefixes with each other exactly as the session's did, and never with a sibling's;
* **its own length**: the sample keeps the first ``n_j`` of the session's ``n`` LLM steps
  (what follows the ``n_j``-th step is dropped), ``n_j`` drawn uniformly from
  ``[ceil(n / 2), n]``;
* **its own outputs and tool times**: every step's output tokens and every tool gap are
  multiplied by a factor drawn from a log-normal of mean 1 and shape ``length_sigma``
  (default 0.5); output tokens stay >= 1. Prompt sizes stay as recorded.

All draws come from ``random.Random(f"{seed}:{b}:{g}:{j}")``: the same seed gives the same
batches. A session that comes back in a later batch keeps its keys: only the weight update's
flush (below) makes its prefix miss, as in RL, where a prompt seen before must be prefilled
again under new weights.

**Batch loop** (``RolloutReplay``): at the batch's start every program starts at once
(``RolloutStarted(size)``, then each program's ``ProgramStarted`` with the ``rollout``,
``rollout_group`` and ``rollout_sample`` tags, as ``thunder_core.RolloutBatch`` sends them);
programs run until every one has ended; then the **weight update**: once the engines are idle
(a prewarm may still be running), every engine's cache is flushed (``Engine.flush_cache``), the
replay forgets which engine cached which block, and the core gets ``BackendFlushed`` per
backend (as the live service does on ``POST /flush_cache``); ``weight_update_s`` later (default
0: the update's own time is the same for every policy and is not counted) the next batch
starts.

**Per batch** (``BatchReport``): makespan (first start to last program end), trajectories per
hour (programs / makespan), **tail** (the share of the makespan the last 10% of programs take
to finish: ``(makespan - t) / makespan``, ``t`` the end of the last program before them), hit
rate (cached / prompt tokens of the batch's completed steps), and recomputed tokens: prompt
tokens missed for any cause but first sight (``thunder_sim.engine.ledger``; the causes are in
``miss_tokens``). Trajectories per hour over the run = all programs / the sum of makespans.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from thunder_core.contract import ROLLOUT_GROUP_TAG, ROLLOUT_SAMPLE_TAG, ROLLOUT_TAG
from thunder_scheduling.events import BackendFlushed, RolloutStarted
from thunder_sim.engine.ledger import MissCause
from thunder_sim.replay.metrics import RunReport, add_misses, ordered_misses
from thunder_sim.replay.trace import (
    CHILD_SEP,
    INSTANCE_SHIFT,
    GapKind,
    SpawnGroup,
    TraceProgram,
    TraceStep,
)
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay, _Run

SAMPLE_SPACE_SHIFT = 24
"""A sample's private keys live in key space ``session space + (j + 1) << 24``."""

TAIL_PROGRAMS_FRACTION = 0.1
"""The tail is the time the last 10% of a batch's programs take to finish."""

_KEY_MASK = (1 << INSTANCE_SHIFT) - 1


@dataclass(frozen=True, slots=True)
class RolloutShape:
    """How the batches are built (the rule is in the module docstring)."""

    groups: int
    samples: int = 4
    batches: int = 3
    length_sigma: float = 0.5
    seed: int = 1
    weight_update_s: float = 0.0

    def __post_init__(self) -> None:
        if self.groups < 1:
            raise ValueError(f"--groups must be >= 1, got {self.groups}")
        if self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        if self.batches < 1:
            raise ValueError(f"--batches must be >= 1, got {self.batches}")
        if self.length_sigma < 0:
            raise ValueError(f"--length-sigma must be >= 0, got {self.length_sigma}")
        if self.weight_update_s < 0:
            raise ValueError(f"--weight-update-s must be >= 0, got {self.weight_update_s}")

    @property
    def batch_programs(self) -> int:
        return self.groups * self.samples


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One program of a batch: its place (batch, group, sample) and what it replays."""

    batch: str
    group: int
    sample: int
    program: TraceProgram

    @property
    def tags(self) -> dict[str, str]:
        return {ROLLOUT_TAG: self.batch, ROLLOUT_GROUP_TAG: str(self.group),
                ROLLOUT_SAMPLE_TAG: str(self.sample)}


def batch_id(index: int) -> str:
    return f"step-{index}"


def sibling(session: TraceProgram, program_id: str, sample: int,
            rng: random.Random, length_sigma: float) -> TraceProgram:
    """Sample ``sample`` of the group that replays ``session`` (the module docstring's rule)."""
    steps = session.steps
    first = steps[0].blocks
    shift = (sample + 1) << SAMPLE_SPACE_SHIFT
    n = len(steps)
    keep = rng.randint(math.ceil(n / 2), n)

    def factor() -> float:
        if length_sigma == 0:
            return 1.0
        return rng.lognormvariate(-length_sigma**2 / 2, length_sigma)

    def private(blocks: tuple[int, ...]) -> tuple[int, ...]:
        out = []
        for pos, key in enumerate(blocks):
            if pos < len(first) and key == first[pos]:
                out.append(key)
            else:
                space = (key >> INSTANCE_SHIFT) + shift
                out.append((space << INSTANCE_SHIFT) | (key & _KEY_MASK))
        return tuple(out)

    def step_of(step: TraceStep, root_first: bool) -> TraceStep:
        out_tokens = max(1, round(step.output_tokens * factor()))
        gap = step.gap_s * factor() if step.gap_kind is GapKind.TOOL else step.gap_s
        blocks = step.blocks if root_first else private(step.blocks)
        return replace(step, output_tokens=out_tokens, gap_s=gap, blocks=blocks)

    def remap(p: TraceProgram, pid: str, limit: int | None) -> TraceProgram:
        items: list[TraceStep | SpawnGroup] = []
        taken = 0
        for item in p.items:
            if isinstance(item, TraceStep):
                if limit is not None and taken >= limit:
                    break
                items.append(step_of(item, root_first=limit is not None and taken == 0))
                taken += 1
            elif limit is None or taken < limit:
                items.append(replace(item, children=tuple(
                    remap(c, pid + CHILD_SEP + c.program_id.rsplit(CHILD_SEP, 1)[-1], None)
                    for c in item.children)))
        while items and isinstance(items[-1], SpawnGroup):
            items.pop()    # a spawn after the last kept step: its result is never read
        return replace(p, program_id=pid, items=tuple(items))

    return remap(session, program_id, keep)


def build_batches(sessions: Sequence[TraceProgram], shape: RolloutShape) -> list[list[Trajectory]]:
    """``shape.batches`` batches of ``groups x samples`` trajectories (module docstring)."""
    if not sessions:
        raise ValueError("no sessions to build rollout batches from (check the context filter)")
    batches = []
    for b in range(shape.batches):
        name = batch_id(b)
        batch = []
        for g in range(shape.groups):
            session = sessions[(b * shape.groups + g) % len(sessions)]
            for j in range(shape.samples):
                rng = random.Random(f"{shape.seed}:{b}:{g}:{j}")
                pid = f"{name}-g{g}-s{j}"
                batch.append(Trajectory(name, g, j, sibling(
                    session, pid, j, rng, shape.length_sigma)))
        batches.append(batch)
    return batches


@dataclass(frozen=True, slots=True)
class BatchReport:
    batch: str
    programs: int
    started_s: float
    makespan_s: float
    trajectories_per_hour: float
    tail_share: float
    steps: int
    prompt_tokens: int
    cached_tokens: int
    hit_rate: float
    recomputed_tokens: int
    miss_tokens: dict[str, int]


@dataclass(frozen=True, slots=True)
class RolloutReport:
    run: RunReport
    batches: tuple[BatchReport, ...]
    shape: RolloutShape
    flushes: int

    @property
    def trajectories_per_hour(self) -> float:
        total_s = sum(b.makespan_s for b in self.batches)
        return sum(b.programs for b in self.batches) / (total_s / 3600) if total_s else 0.0

    @property
    def max_tail_share(self) -> float:
        return max((b.tail_share for b in self.batches), default=math.nan)

    @property
    def hit_rate(self) -> float:
        prompt = sum(b.prompt_tokens for b in self.batches)
        return sum(b.cached_tokens for b in self.batches) / prompt if prompt else math.nan

    @property
    def recomputed_tokens(self) -> int:
        return sum(b.recomputed_tokens for b in self.batches)

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.run.policy, "replicas": self.run.replicas,
                "trajectories_per_hour": self.trajectories_per_hour,
                "max_tail_share": self.max_tail_share, "hit_rate": self.hit_rate,
                "recomputed_tokens": self.recomputed_tokens, "flushes": self.flushes,
                "shape": {"groups": self.shape.groups, "samples": self.shape.samples,
                          "batches": self.shape.batches,
                          "length_sigma": self.shape.length_sigma, "seed": self.shape.seed},
                "batches": [
                    {k: getattr(b, k) for k in BatchReport.__slots__}
                    for b in self.batches],
                "run": self.run.as_dict()}


def tail_share(ends_s: Sequence[float], started_s: float) -> float:
    """The share of the makespan the last 10% of programs take (module docstring)."""
    if not ends_s:
        return math.nan
    ordered = sorted(e - started_s for e in ends_s)
    makespan = ordered[-1]
    if makespan <= 0:
        return 0.0
    last = max(1, math.ceil(TAIL_PROGRAMS_FRACTION * len(ordered)))
    before = ordered[-last - 1] if len(ordered) > last else 0.0
    return (makespan - before) / makespan


@dataclass(slots=True)
class _BatchLog:
    trajectories: list[Trajectory]
    started_s: float = 0.0
    ends_s: dict[str, float] = field(default_factory=dict)


class RolloutReplay(VirtualReplay):
    """The virtual replay playing rollout batches (module docstring) instead of a closed loop.

    ``config.concurrency`` is ignored: a batch starts all its programs at once."""

    def __init__(self, batches: Sequence[Sequence[Trajectory]], config: VirtualConfig,
                 shape: RolloutShape, *, fit: str = "", **kwargs: Any) -> None:
        flat = [t for batch in batches for t in batch]
        super().__init__([t.program for t in flat], config, fit=fit, **kwargs)
        self.shape = shape
        self._batches = [_BatchLog(list(batch)) for batch in batches]
        self._tags = {t.program.program_id: t.tags for t in flat}
        self._batch_of = {p.program_id: i for i, batch in enumerate(batches)
                          for t in batch for p in t.program.walk()}
        self._current = -1
        self._flushes = 0

    # -- hooks ----------------------------------------------------------------------------

    def _begin(self) -> None:
        self._start_batch(0)

    def _program_tags(self, program: TraceProgram) -> dict[str, str]:
        return dict(self._tags.get(program.program_id, {}))

    def _all_played(self) -> bool:
        return not self._runs and self._current >= len(self._batches) - 1 and len(
            self._batches[-1].ends_s) == len(self._batches[-1].trajectories)

    def _root_ended(self, run: _Run) -> None:
        log = self._batches[self._current]
        log.ends_s[run.program.program_id] = self._now
        if len(log.ends_s) == len(log.trajectories) and self._current + 1 < len(self._batches):
            self._at(self._now, self._weight_update)

    # -- batches --------------------------------------------------------------------------

    def _start_batch(self, index: int) -> None:
        self._current = index
        log = self._batches[index]
        log.started_s = self._now
        self._feed(RolloutStarted(self._now, log.trajectories[0].batch,
                                  size=len(log.trajectories)))
        for t in log.trajectories:
            self._played.append(t.program)
            self._start(t.program, None)

    def _weight_update(self) -> None:
        """Flush every engine once all are idle, tell the core, start the next batch."""
        if any(busy is not None for busy in self._busy.values()) or any(
                e.has_work() for e in self.engines.values()):
            self._at(self._now + self.config.fast_forward_s, self._weight_update)
            return
        for name, engine in sorted(self.engines.items()):
            if not engine.flush_cache():
                raise RuntimeError(f"{name} refused flush_cache while idle")
        self.phases.cached_on.clear()
        for name in sorted(self.engines):
            self._feed(BackendFlushed(self._now, name))
        self._flushes += 1
        nxt = self._current + 1
        self._at(self._now + self.shape.weight_update_s, lambda: self._start_batch(nxt))

    # -- report ---------------------------------------------------------------------------

    def run_rollouts(self) -> RolloutReport:
        run = self.run()
        reports = []
        for i, log in enumerate(self._batches):
            steps = [s for s in self.recorder.steps if self._batch_of.get(s.program_id) == i]
            prompt = sum(s.prompt_tokens for s in steps)
            cached = sum(s.cached_tokens for s in steps)
            misses: dict[str, int] = {}
            for s in steps:
                add_misses(misses, s.miss_tokens)
            ends = list(log.ends_s.values())
            makespan = max(ends) - log.started_s if ends else math.nan
            done = len(ends) == len(log.trajectories)
            reports.append(BatchReport(
                batch=log.trajectories[0].batch, programs=len(ends), started_s=log.started_s,
                makespan_s=makespan if done else math.nan,
                trajectories_per_hour=len(ends) / (makespan / 3600) if done and makespan > 0
                else math.nan,
                tail_share=tail_share(ends, log.started_s) if done else math.nan,
                steps=len(steps), prompt_tokens=prompt, cached_tokens=cached,
                hit_rate=cached / prompt if prompt else math.nan,
                recomputed_tokens=sum(n for c, n in misses.items()
                                      if c != MissCause.FIRST_SIGHT.value),
                miss_tokens=ordered_misses(misses)))
        return RolloutReport(run, tuple(reports), self.shape, self._flushes)


__all__ = [
    "BatchReport",
    "RolloutReplay",
    "RolloutReport",
    "RolloutShape",
    "Trajectory",
    "batch_id",
    "build_batches",
    "sibling",
    "tail_share",
]
