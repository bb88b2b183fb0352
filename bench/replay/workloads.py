"""The two workloads of the policy comparison, built from the shared Claude Code sessions.

``long``: the sessions as recorded (Qwen3-8B window with YaRN, 131,072 tokens), 60 of them in
a seeded shuffle, tool gaps capped at 300 s, 3,600 modelled s per run.

``short``: many short programs, the regime of mini-SWE-agent-like agents (5-30k-token
contexts, ~1 s tool calls). Rule: every token count of every session is multiplied by 0.25
(``--token-scale``, prefix structure kept), sessions whose scaled peak prompt + output
exceeds 30,000 tokens are dropped (139 of the 498 remain, peaks 2.8k-30k, mean 19k; first
prompts ~5k), all of them are replayed in a seeded shuffle, and tool gaps are capped at 1 s
(the trace's tool gaps have p10 4 s and a median of 8 s, so nearly every one becomes 1 s);
1,200 modelled s per run. Sessions are recycled with fresh block keys, so at 3x on 2
replicas (117 programs) every slot stays busy with a new program when one ends.

``parallel``: the ``short`` programs with every tool-calling response rewritten to hold 4
parallel tool calls (``PARALLEL_CALLS``): the calls split the response's output evenly and run
the step's gap, half, a third and a quarter of it, the longest rotating with the step
(``thunder_sim/replay/tool_levers.py`` states the rule). The trace records one ``tool_use``
per response and no call positions, so this is a rewrite, not a measurement: the regime where
streaming dispatch matters most (several calls in one response, started one by one).

All use human gaps of 0 (``player.py``) and the same seed; programs that fit the pools are
counted from each workload's own mean peak context (``compare.fitting_programs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_sim.replay.fit import QWEN3_8B_YARN_CONTEXT_TOKENS, ContextFit, FitResult
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import default_trace_dir


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    fit: ContextFit
    gaps: GapPolicy
    duration_s: float
    rule: str
    parallel_calls: int = 1
    """Tool calls per tool-calling response (``ToolLevers.parallel_calls``)."""

    def load(self) -> FitResult:
        return self.fit.load(default_trace_dir())


def workload(name: str, seed: int = 1, sessions: int | None = None) -> Workload:
    """``long``, ``short`` or ``parallel`` (``sessions`` overrides how many are drawn)."""
    if name == "long":
        return Workload(
            "long", ContextFit(context_tokens=QWEN3_8B_YARN_CONTEXT_TOKENS,
                               sessions=sessions or 60, seed=seed),
            GapPolicy(tool_gap_cap_s=300.0), 3600.0,
            "long Claude Code sessions as recorded (peak <= 131,072 tokens), tool gaps capped "
            "at 300 s")
    if name == "short":
        return Workload(
            "short", ContextFit(context_tokens=30_000, token_scale=0.25, sessions=sessions,
                                seed=seed),
            GapPolicy(tool_gap_cap_s=1.0), 1200.0,
            "short programs: every token count x 0.25, sessions whose scaled peak exceeds "
            "30,000 tokens dropped, tool gaps capped at 1 s")
    if name == "parallel":
        short = workload("short", seed, sessions)
        return Workload(
            "parallel", short.fit, short.gaps, short.duration_s,
            f"{short.rule}; every tool-calling response holds {PARALLEL_CALLS} parallel calls "
            f"(ends evenly spread over the output, durations g, g/2, g/3, g/4 of the step's "
            f"gap g, longest rotating with the step)", PARALLEL_CALLS)
    raise ValueError(f"unknown workload {name!r}; choose long, short or parallel")


PARALLEL_CALLS = 4
"""Calls per tool-calling response in the ``parallel`` workload."""

WORKLOADS = ("long", "short", "parallel")
