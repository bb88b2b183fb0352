"""The tool-aware prompt split's decision: prefill a program's known next prefix while its tool
runs, or not (issue 11; docs/prompt-split.md). One rule, used by the live driver
(``thunder_scheduler.prefills``) and by the virtual replay (``thunder_sim.replay.virtual``);
each feeds it what it knows of the engine's cache, and both read the room from the core
(``ProgramScheduler.split_room``).

In order:

1. **paused**: the core took the program's KV away; the pre-restore warm-up (``Prewarm``)
   sends the prefix before the program comes back;
2. **cached**: the prefix is already in the engine's cache (the replay asks its engine; the
   service knows it only from its own last split of the program); nothing to do;
3. **tool long**: the program's tool is expected to run (``SplitRoom.expected_tool_s``, the
   core's estimate: a running call's expected end, else the per-tool average of the calls
   the response holds; a tool never seen and not announced is sent, as before the rule)
   past the time the core keeps counting the program's KV at half weight or more
   (``SplitRoom.keep_s``: forever under a full acting weight, never under none, the
   half-life minus the time already acting under a decaying one). A policy that lets an
   acting program's charge decay (Thunder) admits others into that program's room during a
   long tool; a prefill of its prefix there takes KV the active programs need, and its
   recency makes the engine evict theirs instead of this one's (measured: long sessions at
   3x, bench/results/sutradhara/README.md);
4. **no room**: the part to compute (``uncached_tokens``) does not fit in what the backend has
   left once every active program's context counts at full weight, this program's included
   (``SplitRoom.free_tokens``: capacity minus the unweighted charges, ``BackendLedger``): a
   split only uses room no active program holds;
5. otherwise **sent**.

When the core cannot say (no ``split_room``: a scripted core, or the program has no backend)
the room rule is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["SplitAction", "SplitRoom", "split_action"]


class SplitAction(StrEnum):
    """What to do with a known next prefix (the label of ``thunder_prompt_splits_total``)."""

    SENT = "sent"
    """Prefill it now on the program's engine, below the program's own priority."""
    CACHED = "cached"
    """Nothing: it is cached there already."""
    PAUSED = "paused"
    """Nothing now: the core took the program's KV away; the pre-restore warm-up sends it."""
    TOOL_LONG = "tool_long"
    """Nothing: the tool outlasts the core's keeping of the program's KV."""
    NO_ROOM = "no_room"
    """Nothing: computing it would evict KV that active programs hold."""


@dataclass(frozen=True, slots=True)
class SplitRoom:
    """What the core knows of the room for a program's split on its backend."""

    backend: str
    free_tokens: float
    """Capacity minus every active program's page-rounded context at full weight (acting
    programs undecayed, this program included) minus the shared prefix pool."""
    expected_tool_s: float | None
    """From now to the expected end of the program's tool calls (None: unknown)."""
    keep_s: float
    """From now, how long the core counts the program's KV at half weight or more
    (``math.inf``: for as long as it acts)."""


def split_action(*, paused: bool, cached: bool, uncached_tokens: int,
                 room: SplitRoom | None) -> SplitAction:
    """The decision (module docstring); ``uncached_tokens``: what the prefill would compute."""
    if paused:
        return SplitAction.PAUSED
    if cached:
        return SplitAction.CACHED
    if room is None:
        return SplitAction.SENT
    if room.expected_tool_s is not None and room.expected_tool_s > room.keep_s:
        return SplitAction.TOOL_LONG
    if uncached_tokens > room.free_tokens:
        return SplitAction.NO_ROOM
    return SplitAction.SENT
