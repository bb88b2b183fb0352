"""Program phases for the recompute ledger: what the replay knows and the engines do not.

The engines' ledgers (``thunder_sim.engine.ledger``) decide a block's eviction cause from the
state of the program that last used it and of the program the eviction made room for. In
virtual mode the replay knows both: it plays the programs (tool calls, ends) and applies the
scheduler's commands (``Pause`` / ``Resume`` / ``Release``). ``ProgramPhases`` keeps that
state and answers every engine's ledger (``attach``):

- *forcing*: the program was restored by force (the aging bound) and its first request since
  has not finished: what its prefill evicts is ``forced_restore``, whoever owned it;
- *paused*: between ``Pause`` and ``Resume`` / ``Release``;
- *in a tool*: between ``ToolStarted`` and ``ToolFinished`` (a subagent spawn counts: the
  parent sits in its Task tool);
- *ended*: after ``ProgramEnded``;
- otherwise *active*: a request of it waits at an engine (or is being decoded, but then its
  blocks are locked and cannot be evicted).

A block missing on one engine that another engine has cached is ``moved``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from thunder_sim.engine import Engine
from thunder_sim.engine.ledger import MissCause


class ProgramPhases:
    def __init__(self) -> None:
        self.in_tool: set[str] = set()
        self.paused: set[str] = set()
        self.forcing: set[str] = set()
        self.ended: set[str] = set()
        self.cached_on: dict[int, str] = {}     # block -> the engine that cached it last

    def attach(self, engines: Mapping[str, Engine]) -> None:
        """Make every engine's ledger ask these phases (and where blocks were cached)."""
        for name, engine in engines.items():
            engine.attribute_with(_EngineView(self, name))

    # -- updates from the replay ---------------------------------------------------------

    def tool_started(self, program_id: str) -> None:
        self.in_tool.add(program_id)

    def tool_finished(self, program_id: str) -> None:
        self.in_tool.discard(program_id)

    def paused_now(self, program_id: str) -> None:
        self.paused.add(program_id)
        self.forcing.discard(program_id)

    def resumed(self, program_id: str, forced: bool) -> None:
        self.paused.discard(program_id)
        if forced:
            self.forcing.add(program_id)

    def request_finished(self, program_id: str) -> None:
        self.forcing.discard(program_id)

    def ended_now(self, program_id: str) -> None:
        self.ended.add(program_id)
        self.in_tool.discard(program_id)
        self.paused.discard(program_id)
        self.forcing.discard(program_id)

    # -- the ledger's question -----------------------------------------------------------

    def eviction_cause(self, owner: str | None, evictor: str | None) -> MissCause:
        if evictor is not None and evictor in self.forcing:
            return MissCause.FORCED_RESTORE
        if owner is None or owner in self.ended:
            return MissCause.OWNER_GONE
        if owner in self.paused:
            return MissCause.EVICTED_PAUSED
        if owner in self.in_tool:
            return MissCause.EVICTED_ACTING
        return MissCause.OVER_ADMISSION


class _EngineView:
    """One engine's ``Attribution``: the shared phases, and which engine cached each block."""

    __slots__ = ("_name", "_phases")

    def __init__(self, phases: ProgramPhases, name: str) -> None:
        self._phases = phases
        self._name = name

    def eviction_cause(self, owner: str | None, evictor: str | None) -> MissCause:
        return self._phases.eviction_cause(owner, evictor)

    def cached(self, blocks: tuple[int, ...]) -> None:
        self._phases.cached_on.update(dict.fromkeys(blocks, self._name))

    def count_elsewhere(self, blocks: Sequence[int]) -> int:
        """A block missing here and never evicted here was last cached by another engine if
        ``cached_on`` names one (it cannot name this one: it would have been evicted here)."""
        where = Counter(map(self._phases.cached_on.get, blocks))
        return len(blocks) - where[None] - where[self._name]
