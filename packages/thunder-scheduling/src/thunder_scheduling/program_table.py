"""The program table: one mutable record per live program, plus recently ended ones.

A record holds a program's ``phase`` (reasoning, acting) and ``status`` (active, paused,
terminated); only the scheduler mutates records, in response to events (the state machine is
in docs/scheduling.md). ``backend is None`` on a paused program means it was never placed.
An id used again after its program ended starts a new *incarnation*; the ended record stays
in the ring for observation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from thunder_core.contract import ProgramEndStatus, ProgramPhase, ProgramStatus
from thunder_scheduling.accounting import WeightMode
from thunder_scheduling.kv_tiers import KvTier


@dataclass(slots=True, eq=False)
class ToolCall:
    tool_name: str
    started_at: float
    expected_end_at: float | None


@dataclass(slots=True, eq=False)
class Program:
    """What the scheduler knows of one program. Policies read it; only the scheduler writes."""

    program_id: str
    seq: int
    """Creation order over the scheduler's life: the deterministic tie-breaker."""
    incarnation: int
    started_at: float
    last_event_at: float
    framework: str = "other"
    priority: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    parent_program_id: str | None = None
    lease_s: float | None = None

    status: ProgramStatus = ProgramStatus.PAUSED
    phase: ProgramPhase = ProgramPhase.REASONING
    backend: str | None = None
    """Active: where it runs. Paused: where it ran last (None: never placed)."""
    marked: bool = False
    """Chosen for pause while a request was in flight: paused when the response ends."""

    context_tokens: int = 0
    """Prompt + completion of the last response (exact), or the estimate before one."""
    tokens_exact: bool = False
    shared_prefix_tokens: dict[str, int] = field(default_factory=dict)
    """Per backend: the cached part of the program's first response there (accounting.py)."""
    responded_on: set[str] = field(default_factory=set)

    in_flight: dict[str, None] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    """Requests parked at the proxy, with their arrival time, in arrival order."""
    tools: dict[str, ToolCall] = field(default_factory=dict)

    acting_since: float | None = None
    weight_mode: WeightMode = WeightMode.FULL
    weight_switch_at: float | None = None
    weight_then: WeightMode = WeightMode.FULL
    prewarm_at_switch: bool = False
    ended_with_tool_call: bool = False
    """The last response ended in a tool call (``RequestFinished.ends_with_tool_call``)."""
    paused_in_spell: bool = False
    """Paused since the program last sent a request (its KV may be cold: prewarm it)."""
    kv_tier: KvTier = KvTier.GONE
    """Where the core believes its KV is (``kv_tiers.py``): device, host or gone."""

    paused_since: float | None = None
    pause_count: int = 0
    paused_total_s: float = 0.0
    longest_pause_s: float = 0.0
    """The longest completed pause (seconds): what the aging bound limits."""
    engine_priority: int | None = None

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    tool_calls: int = 0
    service_tokens: int = 0
    """Attained service: completion + uncached prompt tokens processed so far (Autellix)."""

    end_status: ProgramEndStatus | None = None
    end_reason: str | None = None
    ended_at: float | None = None
    version: int = 0
    """Bumped on every change; stale heap entries are recognised by it."""

    @property
    def current_tool(self) -> str | None:
        if not self.tools:
            return None
        return next(reversed(self.tools.values())).tool_name

    def expected_tool_end_at(self) -> float | None:
        ends = [t.expected_end_at for t in self.tools.values()]
        if not ends or any(e is None for e in ends):
            return None
        return max(e for e in ends if e is not None)

    def paused_s(self, now: float) -> float:
        if self.paused_since is None:
            return self.paused_total_s
        return self.paused_total_s + max(0.0, now - self.paused_since)

    def end_pause(self, now: float) -> float | None:
        """Close the current pause at ``now`` (its length joins ``paused_total_s`` and
        ``longest_pause_s``) and return its length; None when the program is not paused."""
        if self.paused_since is None:
            return None
        spell = max(0.0, now - self.paused_since)
        self.paused_total_s += spell
        self.longest_pause_s = max(self.longest_pause_s, spell)
        self.paused_since = None
        return spell

    def longest_pause(self, now: float) -> float:
        """The longest pause so far, the current one included."""
        if self.paused_since is None:
            return self.longest_pause_s
        return max(self.longest_pause_s, now - self.paused_since)

    def paused_share(self, now: float) -> float:
        """The share of its life (start to end, or to ``now``) the program spent paused."""
        life = (self.ended_at if self.ended_at is not None else now) - self.started_at
        return min(1.0, self.paused_s(now) / life) if life > 0 else 0.0


class ProgramTable:
    """Live programs by id (insertion ordered) and a bounded ring of ended ones."""

    def __init__(self, keep_terminated: int) -> None:
        self._live: dict[str, Program] = {}
        self._ended: OrderedDict[tuple[str, int], Program] = OrderedDict()
        self._incarnations: dict[str, int] = {}
        self._keep = keep_terminated
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def get(self, program_id: str) -> Program | None:
        return self._live.get(program_id)

    def create(self, program_id: str, at: float) -> Program:
        if program_id in self._live:
            raise ValueError(f"program {program_id!r} is already live")
        incarnation = self._incarnations.get(program_id, -1) + 1
        self._incarnations[program_id] = incarnation
        self._seq += 1
        program = Program(
            program_id=program_id,
            seq=self._seq,
            incarnation=incarnation,
            started_at=at,
            last_event_at=at,
        )
        self._live[program_id] = program
        return program

    def set_incarnation(self, program: Program, incarnation: int) -> None:
        """Give a just-created program its incarnation from a checkpoint."""
        program.incarnation = incarnation
        self._incarnations[program.program_id] = incarnation

    def end(self, program: Program) -> None:
        del self._live[program.program_id]
        if self._keep == 0:
            self._incarnations.pop(program.program_id, None)
            return
        self._ended[(program.program_id, program.incarnation)] = program
        while len(self._ended) > self._keep:
            (program_id, incarnation), _ = self._ended.popitem(last=False)
            if program_id not in self._live and self._incarnations.get(program_id) == incarnation:
                del self._incarnations[program_id]  # its newest record is gone: forget the id

    def remembered_ids(self) -> int:
        """Program ids whose incarnation count is kept: live or among the kept ended ones
        (bounded by live programs + ``keep_terminated``)."""
        return len(self._incarnations)

    def newest(self, program_id: str) -> Program | None:
        """The live program, else its newest kept ended incarnation; O(1)."""
        live = self._live.get(program_id)
        if live is not None:
            return live
        incarnation = self._incarnations.get(program_id)
        return None if incarnation is None else self._ended.get((program_id, incarnation))

    def live(self) -> Iterator[Program]:
        return iter(self._live.values())

    def ended(self) -> Iterator[Program]:
        return iter(self._ended.values())


__all__ = ["Program", "ProgramTable", "ToolCall"]
