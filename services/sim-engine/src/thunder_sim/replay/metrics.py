"""What a replay measures, in modelled seconds, and the summary both runners produce.

Definitions (the ThunderAgent paper's metric is agent steps per minute):

- a *step* is one LLM request of a program (subagents' steps included);
- ``steps_per_min`` = completed steps / run duration in modelled minutes; the run lasts from
  the first program's start to the last step's end (or to ``duration_s`` when one was set);
- ``output_tokens_per_s`` = completion tokens of completed steps / run duration;
- ``hit_rate`` = sum of cached prompt tokens / sum of prompt tokens (token-weighted), from the
  engines' usage reports; ``ideal_hit_rate`` is what an unlimited prefix cache gets on the same
  steps (``trace.ideal_hit_tokens``);
- ``step latency`` = from the moment the program sends the request (including any time held
  at the scheduler) to its last output token; ``ttft`` = to its first output token;
- ``recomputed_tokens``: tokens the engines prefilled again after a retraction;
- ``miss_tokens`` (the recompute ledger): the ``prompt_tokens - cached_tokens`` of the
  completed steps split by cause (``thunder_sim.engine.ledger.MissCause``); the causes sum to
  exactly that difference, so ``sum / prompt_tokens == 1 - hit_rate`` (empty when the runner
  cannot attribute: live mode reports the engines' own ledger in ``extra``);
- ``pauses``, ``migrations``, ``max_paused_s`` (the longest single pause): from the
  scheduler's Pause / Resume decisions; ``max_paused_share``: the largest share of a program's
  life (start to end, or to the end of the run) spent paused, over every program (fairness).
  Live mode reads both from the scheduler's program table (``longest_pause_s``,
  ``paused_share`` of ``GET /v1/programs``); against a target without the lifecycle API they
  are unknown (NaN share);
- ``ftr`` (Sutradhara's time to the final answer), per completed session (root program): a
  session's final answer is its last LLM step; FTR = from the user's message (the send time of
  the session's last step whose input is a human message, or of its first step) to the first
  token of that final answer; ``ftr_p50_s`` / ``ftr_p90_s`` over sessions (NaN in live mode);
- ``ftr_anatomy``: where the FTR seconds of the completed sessions went, as shares of their
  sum, over the root program's steps of the final turn: ``held`` (the scheduler held the
  request: its program was paused or queued), ``engine`` (admitted to first token: the
  engine's queue and the prefill), ``decode`` (first to last token of the turn's earlier
  steps) and ``tools`` (the rest: tool calls, subagents, and the gaps between); empty when no
  session completed (and in live mode);
- ``session`` time: from a session's start to the end of its last step, subagents included;
  ``session_p50_s`` / ``session_p90_s`` over completed sessions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from thunder_sim.engine.ledger import MissCause


@dataclass(frozen=True, slots=True)
class StepRecord:
    program_id: str
    step_index: int
    sent_s: float
    first_token_s: float | None
    finished_s: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    miss_tokens: dict[str, int] = field(default_factory=dict)


FTR_PARTS = ("held", "engine", "decode", "tools")


def add_step_parts(parts: dict[str, float], sent_s: float, admitted_s: float | None,
                   first_token_s: float, finished_s: float | None) -> None:
    """Add one step of a turn to its FTR anatomy (``finished_s`` None: the final answer, whose
    decode is after the FTR ends)."""
    admitted = sent_s if admitted_s is None else admitted_s
    parts["held"] = parts.get("held", 0.0) + max(0.0, admitted - sent_s)
    parts["engine"] = parts.get("engine", 0.0) + max(0.0, first_token_s - admitted)
    if finished_s is not None:
        parts["decode"] = parts.get("decode", 0.0) + max(0.0, finished_s - first_token_s)


def ftr_anatomy(parts: dict[str, float], ftr_s: float) -> dict[str, float]:
    """A completed turn's FTR split into ``FTR_PARTS`` (seconds; ``tools`` is the rest)."""
    out = {k: parts.get(k, 0.0) for k in FTR_PARTS[:3]}
    out["tools"] = max(0.0, ftr_s - sum(out.values()))
    return out


def add_misses(total: dict[str, int], part: dict[str, int]) -> None:
    for cause, n in part.items():
        total[cause] = total.get(cause, 0) + n


def ordered_misses(misses: dict[str, int]) -> dict[str, int]:
    """Every cause in ``MissCause`` order (zeros included), then any unknown ones."""
    out = {c.value: misses.get(c.value, 0) for c in MissCause}
    out.update({k: v for k, v in misses.items() if k not in out})
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class RunRecorder:
    """Collects step records and scheduler decisions during one run."""

    steps: list[StepRecord] = field(default_factory=list)
    pauses: int = 0
    migrations: int = 0
    paused_since: dict[str, float] = field(default_factory=dict)
    paused_s: list[float] = field(default_factory=list)
    programs_started: int = 0
    programs_done: int = 0
    capped_human_s: float = 0.0
    capped_tool_s: float = 0.0
    failed_steps: int = 0
    born_s: dict[str, float] = field(default_factory=dict)
    paused_total_s: dict[str, float] = field(default_factory=dict)
    paused_shares: list[float] = field(default_factory=list)
    ftr_s: list[float] = field(default_factory=list)
    ftr_parts: list[dict[str, float]] = field(default_factory=list)
    session_s: list[float] = field(default_factory=list)

    def started(self, program_id: str, at: float) -> None:
        self.programs_started += 1
        self.born_s[program_id] = at

    def ended(self, program_id: str, at: float) -> None:
        """A program ended: its share of life spent paused is final."""
        self.programs_done += 1
        born = self.born_s.pop(program_id, None)
        total = self.paused_total_s.pop(program_id, 0.0)
        if born is not None and at > born:
            self.paused_shares.append(total / (at - born))

    def paused(self, program_id: str, at: float) -> None:
        self.pauses += 1
        self.paused_since.setdefault(program_id, at)

    def _unpause(self, program_id: str, at: float) -> None:
        since = self.paused_since.pop(program_id, None)
        if since is not None:
            self.paused_s.append(at - since)
            self.paused_total_s[program_id] = self.paused_total_s.get(program_id, 0.0) + (
                at - since)

    def resumed(self, program_id: str, at: float, migrated: bool) -> None:
        self.migrations += int(migrated)
        self._unpause(program_id, at)

    def released(self, program_id: str, at: float) -> None:
        """A program ended (or its lease expired) while paused: its wait ends here."""
        self._unpause(program_id, at)

    def close(self, at: float) -> None:
        """Count programs still paused at the end of the run as paused until ``at``, and the
        paused share of programs still alive up to ``at``."""
        for program_id in list(self.paused_since):
            self._unpause(program_id, at)
        for program_id, born in self.born_s.items():
            if at > born:
                self.paused_shares.append(self.paused_total_s.get(program_id, 0.0) / (at - born))
        self.born_s.clear()
        self.paused_total_s.clear()


@dataclass(frozen=True, slots=True)
class RunReport:
    label: str
    mode: str                      # "virtual" | "live"
    policy: str
    replicas: int
    concurrency: int
    programs_done: int
    steps: int
    duration_s: float
    steps_per_min: float
    output_tokens_per_s: float
    prompt_tokens: int
    cached_tokens: int
    hit_rate: float
    ideal_hit_rate: float
    recomputed_tokens: int
    step_latency_p50_s: float
    step_latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    pauses: int
    migrations: int
    max_paused_s: float
    capped_human_s: float
    capped_tool_s: float
    failed_steps: int = 0
    time_scale: float = 1.0
    fit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    miss_tokens: dict[str, int] = field(default_factory=dict)
    max_paused_share: float = 0.0
    sessions_done: int = 0
    ftr_p50_s: float = math.nan
    ftr_p90_s: float = math.nan
    ftr_anatomy: dict[str, float] = field(default_factory=dict)
    session_p50_s: float = math.nan
    session_p90_s: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def anatomy_shares(turns: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each part's share of all the turns' FTR seconds (empty without a completed turn)."""
    total = sum(sum(t.values()) for t in turns)
    if total <= 0:
        return {}
    return {k: sum(t.get(k, 0.0) for t in turns) / total for k in FTR_PARTS}


def summarise(
    rec: RunRecorder, *, label: str, mode: str, policy: str, replicas: int, concurrency: int,
    duration_s: float, recomputed_tokens: int, ideal: tuple[int, int], time_scale: float = 1.0,
    fit: str = "", extra: dict[str, Any] | None = None,
) -> RunReport:
    steps = rec.steps
    prompt = sum(s.prompt_tokens for s in steps)
    cached = sum(s.cached_tokens for s in steps)
    out = sum(s.completion_tokens for s in steps)
    minutes = duration_s / 60 if duration_s > 0 else math.nan
    latencies = [s.finished_s - s.sent_s for s in steps]
    ttfts = [s.first_token_s - s.sent_s for s in steps if s.first_token_s is not None]
    misses: dict[str, int] = {}
    for s in steps:
        add_misses(misses, s.miss_tokens)
    return RunReport(
        label=label, mode=mode, policy=policy, replicas=replicas, concurrency=concurrency,
        programs_done=rec.programs_done, steps=len(steps), duration_s=duration_s,
        steps_per_min=len(steps) / minutes if steps else 0.0,
        output_tokens_per_s=out / duration_s if duration_s > 0 else 0.0,
        prompt_tokens=prompt, cached_tokens=cached,
        hit_rate=cached / prompt if prompt else math.nan,
        ideal_hit_rate=ideal[0] / ideal[1] if ideal[1] else math.nan,
        recomputed_tokens=recomputed_tokens,
        step_latency_p50_s=percentile(latencies, 50), step_latency_p99_s=percentile(latencies, 99),
        ttft_p50_s=percentile(ttfts, 50), ttft_p99_s=percentile(ttfts, 99),
        pauses=rec.pauses, migrations=rec.migrations,
        max_paused_s=max(rec.paused_s, default=0.0),
        capped_human_s=rec.capped_human_s, capped_tool_s=rec.capped_tool_s,
        failed_steps=rec.failed_steps, time_scale=time_scale, fit=fit, extra=extra or {},
        miss_tokens=ordered_misses(misses) if misses else {},
        max_paused_share=max(rec.paused_shares, default=0.0),
        sessions_done=len(rec.session_s),
        ftr_p50_s=percentile(rec.ftr_s, 50), ftr_p90_s=percentile(rec.ftr_s, 90),
        ftr_anatomy=anatomy_shares(rec.ftr_parts),
        session_p50_s=percentile(rec.session_s, 50),
        session_p90_s=percentile(rec.session_s, 90),
    )
