"""The recompute ledger: why each prompt token an engine prefilled was not a cache hit.

At every admission the engine matches the prompt's whole blocks against its radix cache;
the rest of the prompt is prefilled. The ledger gives every one of those missed prompt tokens
exactly one cause, so that ``sum(causes) == prompt_tokens - cached_tokens`` per admission:

- a re-admission after a retraction: every missed token is ``retraction`` (without the
  retraction the request would have kept its KV);
- otherwise, per missed whole block, by its history on this engine:
  - it was evicted here: the cause recorded *when it was evicted* (below);
  - it was never cached here but is (or was) cached on another engine: ``moved`` (the program
    migrated, or its requests were routed elsewhere before);
  - never cached anywhere: ``first_sight``;
- the prompt's partial last block is never cached (only whole pages are): ``first_sight``,
  as in the ideal cache (``trace.ideal_hit_tokens``).

At eviction the cause is decided from what evicted the block and the state of the program
that last used it (its *owner*, ``EngineRequest.owner``); ``Attribution`` supplies the
program state, which only the caller knows:

- evicted by a retraction (``retract_decode``'s release and bulk eviction): ``retraction``;
- evicted for the prefill of a program being restored by force (aging): ``forced_restore``;
- its owner was paused by the scheduler: ``evicted_paused``;
- its owner was acting (in a tool): ``evicted_acting``;
- its owner was active and not in a tool (its request queued at the engine or held at the
  scheduler, i.e. the scheduler let more in than fits): ``over_admission``;
- its owner had ended (or is unknown): ``owner_gone``;
- with only the engine's knowledge (``EngineOnlyAttribution``, the live ``thunder-sim serve``):
  ``over_admission`` when the owner has a request in this engine, else ``evicted_away``
  (acting or paused: the engine cannot tell which).

SGLang keeps no such ledger; this is instrumentation only and changes no engine decision.
Cost, all in C loops: one dict write per evicted block, one lookup per missed block at
admission; with the replay's attribution also one dict write per newly cached block and one
lookup per missed block never evicted here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol


class MissCause(StrEnum):
    FIRST_SIGHT = "first_sight"
    EVICTED_ACTING = "evicted_acting"
    EVICTED_PAUSED = "evicted_paused"
    FORCED_RESTORE = "forced_restore"
    MOVED = "moved"
    OVER_ADMISSION = "over_admission"
    RETRACTION = "retraction"
    OWNER_GONE = "owner_gone"
    EVICTED_AWAY = "evicted_away"


RETRACTION_EVICTOR = "\x00retraction"
"""The evictor tag of evictions done by ``retract_decode``."""


class Attribution(Protocol):
    """What the caller knows that the engine does not: programs' states, other engines."""

    def eviction_cause(self, owner: str | None, evictor: str | None) -> MissCause:
        """The cause to record for blocks last used by ``owner``, evicted now to make room for
        a request of program ``evictor`` (None: the decode batch)."""
        ...

    def cached(self, blocks: tuple[int, ...]) -> None:
        """This engine has just cached ``blocks`` (for other engines' ``moved``)."""
        ...

    def count_elsewhere(self, blocks: Sequence[int]) -> int:
        """How many of ``blocks`` (missing here, never evicted here) another engine cached."""
        ...


class MissLedger:
    """Per engine: the eviction cause of every block evicted here, the programs with a request
    in the engine, and the totals per cause."""

    __slots__ = ("attribution", "evicted", "evictor", "live_owners", "page_tokens", "totals")

    def __init__(self, page_tokens: int) -> None:
        self.page_tokens = page_tokens
        self.attribution: Attribution = EngineOnlyAttribution(self)
        self.evicted: dict[int, MissCause] = {}
        self.evictor: str | None = None      # who the current allocation is for
        self.live_owners: dict[str, int] = {}
        self.totals: dict[str, int] = dict.fromkeys(MissCause, 0)

    # -- engine hooks ----------------------------------------------------------------------

    def request_entered(self, owner: str | None) -> None:
        if owner is not None:
            self.live_owners[owner] = self.live_owners.get(owner, 0) + 1

    def request_left(self, owner: str | None) -> None:
        if owner is None:
            return
        n = self.live_owners[owner] - 1
        if n:
            self.live_owners[owner] = n
        else:
            del self.live_owners[owner]

    def cached(self, blocks: tuple[int, ...]) -> None:
        self.attribution.cached(blocks)

    def evicting(self, blocks: tuple[int, ...], owner: str | None) -> None:
        if self.evictor == RETRACTION_EVICTOR:
            cause = MissCause.RETRACTION
        else:
            cause = self.attribution.eviction_cause(owner, self.evictor)
        self.evicted.update(dict.fromkeys(blocks, cause))

    def admitted(self, prompt_blocks: tuple[int, ...], prompt_tokens: int, matched_blocks: int,
                 whole_blocks: int, readmission: bool) -> dict[str, int]:
        """The causes of this admission's missed prompt tokens (added to the totals)."""
        page = self.page_tokens
        missed = prompt_tokens - matched_blocks * page
        out: dict[str, int] = {}
        if missed <= 0:
            return out
        if readmission:
            out[MissCause.RETRACTION] = missed
        else:
            # per block, but in C: a long prompt misses thousands of blocks at once
            keys = prompt_blocks[matched_blocks:whole_blocks]
            tags = list(map(self.evicted.get, keys))
            n_fresh = tags.count(None)
            fresh: Sequence[int] = keys
            if n_fresh < len(tags):
                for why, n in Counter(tags).items():
                    if why is not None:
                        out[why] = n * page
                fresh = [b for b, why in zip(keys, tags, strict=True) if why is None]
            if fresh:
                n_moved = self.attribution.count_elsewhere(fresh)
                if n_moved:
                    out[MissCause.MOVED] = n_moved * page
                if len(fresh) > n_moved:
                    out[MissCause.FIRST_SIGHT] = (len(fresh) - n_moved) * page
            tail = prompt_tokens - whole_blocks * page
            if tail:
                out[MissCause.FIRST_SIGHT] = out.get(MissCause.FIRST_SIGHT, 0) + tail
        totals = self.totals
        for key, n in out.items():
            totals[key] += n
        return out


class EngineOnlyAttribution:
    """What one engine knows alone: whether the owner has a request in it; no other engine."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: MissLedger) -> None:
        self._ledger = ledger

    def eviction_cause(self, owner: str | None, evictor: str | None) -> MissCause:
        if owner is None:
            return MissCause.OWNER_GONE
        if owner in self._ledger.live_owners:
            return MissCause.OVER_ADMISSION
        return MissCause.EVICTED_AWAY

    def cached(self, blocks: tuple[int, ...]) -> None:
        pass

    def count_elsewhere(self, blocks: Sequence[int]) -> int:
        return 0


def owner_of(rid: str) -> str:
    """The program a forwarded request belongs to: the scheduler names engine requests
    ``<program_id>:<seq>`` (``thunder_core.contract.engine_request_id``); other ids are their
    own owner."""
    head, sep, _tail = rid.rpartition(":")
    return head if sep else rid
