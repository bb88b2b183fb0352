"""The program player: a trace program as a flat list of actions, shared by both runners.

``plan(program, gaps)`` is pure. The live runner (``live.py``) and the virtual runner
(``virtual.py``) walk the same list, so both modes replay exactly the same behaviour:

- ``Call(step)``: send the LLM request and wait for its whole response;
- ``ToolBegin`` / ``ToolEnd``: the program is acting between them (lifecycle tool events);
  a tool starts right after the response that called it, and ends right before the
  ``tool_result`` step that carries its output;
- ``Wait(duration_s)``: the tool's run time (the trace gap before a ``tool_result`` step), or a
  human gap before a ``text`` step, capped at ``GapPolicy.human_gap_cap_s`` (default 0: a human
  gap is not tool time, and an agent benchmark measures the agent, not the human);
- ``Spawn(children)``: start the subagents together and wait until all have ended. The spawn
  is wrapped in ``ToolBegin``/``ToolEnd`` (the parent is in its Task tool meanwhile).

``GapPolicy.tool_gap_cap_s`` (default none) can cap tool gaps too; every cap's effect is
summed into the report (``capped_human_s``, ``capped_tool_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder_sim.replay.trace import GapKind, SpawnGroup, TraceProgram, TraceStep


@dataclass(frozen=True, slots=True)
class GapPolicy:
    human_gap_cap_s: float = 0.0
    tool_gap_cap_s: float | None = None

    def __post_init__(self) -> None:
        if self.human_gap_cap_s < 0:
            raise ValueError(f"--human-gap-cap-s must be >= 0, got {self.human_gap_cap_s}")
        if self.tool_gap_cap_s is not None and self.tool_gap_cap_s < 0:
            raise ValueError(f"--tool-gap-cap-s must be >= 0, got {self.tool_gap_cap_s}")


@dataclass(frozen=True, slots=True)
class Call:
    step: TraceStep


@dataclass(frozen=True, slots=True)
class Wait:
    duration_s: float
    kind: GapKind
    trace_s: float          # the gap in the trace before capping


@dataclass(frozen=True, slots=True)
class ToolBegin:
    call_id: str
    tool_name: str


@dataclass(frozen=True, slots=True)
class ToolEnd:
    call_id: str


@dataclass(frozen=True, slots=True)
class Spawn:
    children: tuple[TraceProgram, ...]


Action = Call | Wait | ToolBegin | ToolEnd | Spawn


def _wait(step: TraceStep, gaps: GapPolicy) -> Wait | None:
    if step.gap_kind is GapKind.HUMAN:
        d = min(step.gap_s, gaps.human_gap_cap_s)
    elif gaps.tool_gap_cap_s is not None:
        d = min(step.gap_s, gaps.tool_gap_cap_s)
    else:
        d = step.gap_s
    if d <= 0 and step.gap_s <= 0:
        return None
    return Wait(d, step.gap_kind, step.gap_s)


def plan(program: TraceProgram, gaps: GapPolicy) -> tuple[Action, ...]:
    """The program's actions in order (its children are planned when they are spawned)."""
    actions: list[Action] = []
    open_tool: str | None = None
    n_tools = 0

    def begin(name: str) -> str:
        nonlocal n_tools
        n_tools += 1
        call_id = f"call-{n_tools}"
        actions.append(ToolBegin(call_id, name))
        return call_id

    for item in program.items:
        if isinstance(item, SpawnGroup):
            if open_tool is None:
                open_tool = begin(f"subagent:{item.kind}")
            actions.append(Spawn(item.children))
            continue
        step = item
        if step.gap_kind is GapKind.TOOL:
            if open_tool is None:
                open_tool = begin("tool")
            wait = _wait(step, gaps)
            if wait is not None:
                actions.append(wait)
            actions.append(ToolEnd(open_tool))
            open_tool = None
        else:
            if open_tool is not None:   # a spawn followed by a human turn
                actions.append(ToolEnd(open_tool))
                open_tool = None
            wait = _wait(step, gaps)
            if wait is not None:
                actions.append(wait)
        actions.append(Call(step))
    if open_tool is not None:
        actions.append(ToolEnd(open_tool))
    return tuple(actions)
