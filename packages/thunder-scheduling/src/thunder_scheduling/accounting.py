"""KV accounting: what each active program is charged on its backend, and per-backend sums.

``Charge`` applies the rules of docs/scheduling.md ("Accounting"): exact tokens from
usage, pages rounded up, the shared prefix counted once per backend, and the acting weight
(``WeightMode``: full, none, or decaying with a half-life). ``BackendLedger`` keeps each
backend's sums incrementally: the decaying part as one running sum
``S = sum(charge * 2 ** ((since - base) / h))``, read at ``now`` as
``S * 2 ** (-(now - base) / h)`` and rebased (S recomputed exactly) when the exponent passes
200; programs marked for pause get a second pair of sums, so ``committed_tokens`` is O(1).
No event scans a backend's programs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_REBASE_EXPONENT = 200.0
"""2**200 is far from float overflow (2**1023) and far above any token count's precision."""


class WeightMode(StrEnum):
    FULL = "full"
    DECAYING = "decaying"
    NONE = "none"


def ceil_to_page(tokens: int, page_size_tokens: int) -> int:
    return -(-max(0, tokens) // page_size_tokens) * page_size_tokens


def floor_to_page(tokens: int, page_size_tokens: int) -> int:
    return (max(0, tokens) // page_size_tokens) * page_size_tokens


@dataclass(frozen=True, slots=True)
class Charge:
    """What one active program contributes to its backend's ledger."""

    tokens: int
    """Own charge: page-rounded context minus its shared prefix on this backend."""
    mode: WeightMode
    since: float
    """Start of the decay (when the program left the LLM); unused unless DECAYING."""
    shared_tokens: int
    estimated: bool
    """Charged from an estimate (no exact usage on this context yet): counted as reserved."""
    shared_group: str = ""
    """Whose prefix ``shared_tokens`` is: programs of one group share one prefix (an RL
    rollout's GRPO group, ``rollouts.prefix_group``); ``""``: the common system prompt."""


def decay_factor(now: float, since: float, half_life_s: float | None) -> float:
    if half_life_s is None:
        return 1.0
    return float(2.0 ** (-max(0.0, now - since) / half_life_s))


class DecayedSum:
    """Sum of ``tokens * 2 ** (-(now - since) / h)`` over members, O(1) per update."""

    __slots__ = ("_base", "_h", "_members", "_sum")

    def __init__(self, half_life_s: float) -> None:
        self._h = half_life_s
        self._base = 0.0
        self._sum = 0.0
        self._members: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._members)

    def _term(self, tokens: int, since: float) -> float:
        return tokens * float(2.0 ** ((since - self._base) / self._h))

    def _rebase(self, base: float) -> None:
        self._base = base
        self._sum = sum(self._term(t, s) for t, s in self._members.values())

    def add(self, key: str, tokens: int, since: float) -> None:
        if not self._members:
            self._base, self._sum = since, 0.0
        elif (since - self._base) / self._h > _REBASE_EXPONENT:
            self._rebase(since)
        self._members[key] = (tokens, since)
        self._sum += self._term(tokens, since)

    def remove(self, key: str) -> None:
        tokens, since = self._members.pop(key)
        if not self._members:
            self._sum = 0.0
            return
        self._sum = max(0.0, self._sum - self._term(tokens, since))

    def value(self, now: float) -> float:
        if not self._members:
            return 0.0
        if (now - self._base) / self._h > _REBASE_EXPONENT:
            self._rebase(now)
        return self._sum * float(2.0 ** (-(now - self._base) / self._h))


class BackendLedger:
    """One backend: capacity, health, and the charges of its active programs.

    Policies read it (through ``PolicyView``); only the scheduler changes it.
    """

    def __init__(self, name: str, half_life_s: float | None) -> None:
        self.name = name
        self.healthy = False
        self.capacity_tokens = 0
        self.page_size_tokens = 1
        self.reported_used_tokens: int | None = None
        self.host_capacity_tokens = 0
        """The backend's host KV tier (``BackendUpdated.host_capacity_tokens``); 0: none."""
        self.host_load_tokens_per_s: float | None = None
        self.full_tokens = 0
        self.estimated_tokens = 0
        """Part of ``full_tokens`` charged from estimates (no exact usage yet): 'reserved'."""
        self._half_life_s = half_life_s
        self._decaying = DecayedSum(half_life_s) if half_life_s is not None else None
        self._shared_counts: dict[str, dict[int, int]] = {}
        """Per prefix group: how many charges share a prefix of each size."""
        self.shared_pool_tokens = 0
        """The largest shared prefix of each group, summed over the groups."""
        self.charges: dict[str, Charge] = {}
        """Active programs on this backend and their charge."""
        self.marked: dict[str, None] = {}
        """Active programs marked for pause (paused when their response ends). Read-only:
        change it with ``mark`` / ``unmark`` so the marked sums follow."""
        self._marked_full_tokens = 0
        self._marked_decaying = DecayedSum(half_life_s) if half_life_s is not None else None
        self.paused_here = 0
        """Paused programs whose last backend is this one."""

    # -- reading --------------------------------------------------------------------------

    def weight(self, charge: Charge, now: float) -> float:
        if charge.mode is WeightMode.FULL:
            return float(charge.tokens)
        if charge.mode is WeightMode.NONE:
            return 0.0
        return charge.tokens * decay_factor(now, charge.since, self._half_life_s)

    def used_tokens(self, now: float) -> float:
        """Weighted tokens of all active programs (marked included) plus the shared pool."""
        decaying = self._decaying.value(now) if self._decaying is not None else 0.0
        return self.full_tokens + decaying + self.shared_pool_tokens

    def marked_tokens(self, now: float) -> float:
        """Weighted tokens of the marked programs (same weights as ``used_tokens``)."""
        if not self.marked:
            return 0.0
        decaying = self._marked_decaying.value(now) if self._marked_decaying is not None else 0.0
        return self._marked_full_tokens + decaying

    def committed_tokens(self, now: float) -> float:
        """Used tokens not counting programs already marked for pause."""
        return self.used_tokens(now) - self.marked_tokens(now)

    def raw_tokens(self) -> int:
        """Unweighted charges plus the shared pool (what the KV would hold if nothing decayed)."""
        return sum(c.tokens for c in self.charges.values()) + self.shared_pool_tokens

    def shared_prefix_of(self, group: str) -> int:
        """The prefix of ``group`` already in the pool (its largest shared prefix here)."""
        return max(self._shared_counts.get(group, ()), default=0)

    def unmarked_count(self) -> int:
        return len(self.charges) - len(self.marked)

    # -- writing (scheduler only) ---------------------------------------------------------

    def set_half_life(self, half_life_s: float | None) -> None:
        self._half_life_s = half_life_s

    def mark(self, program_id: str) -> None:
        """Mark a program for pause; its charge (now or when added) counts as marked."""
        if program_id in self.marked:
            return
        self.marked[program_id] = None
        charge = self.charges.get(program_id)
        if charge is not None:
            self._add_marked(program_id, charge)

    def unmark(self, program_id: str) -> None:
        if program_id not in self.marked:
            return
        del self.marked[program_id]
        charge = self.charges.get(program_id)
        if charge is not None:
            self._remove_marked(program_id, charge)

    def _add_marked(self, program_id: str, charge: Charge) -> None:
        if charge.mode is WeightMode.FULL or (
            charge.mode is WeightMode.DECAYING and self._marked_decaying is None
        ):
            self._marked_full_tokens += charge.tokens
        elif charge.mode is WeightMode.DECAYING and self._marked_decaying is not None:
            self._marked_decaying.add(program_id, charge.tokens, charge.since)

    def _remove_marked(self, program_id: str, charge: Charge) -> None:
        if charge.mode is WeightMode.FULL or (
            charge.mode is WeightMode.DECAYING and self._marked_decaying is None
        ):
            self._marked_full_tokens -= charge.tokens
        elif charge.mode is WeightMode.DECAYING and self._marked_decaying is not None:
            self._marked_decaying.remove(program_id)

    def add(self, program_id: str, charge: Charge) -> None:
        """Charge an active program (replacing needs ``remove`` first); counted as marked
        if it is marked."""
        self.charges[program_id] = charge
        if program_id in self.marked:
            self._add_marked(program_id, charge)
        if charge.mode is WeightMode.FULL or (
            charge.mode is WeightMode.DECAYING and self._decaying is None
        ):
            self.full_tokens += charge.tokens
        elif charge.mode is WeightMode.DECAYING and self._decaying is not None:
            self._decaying.add(program_id, charge.tokens, charge.since)
        if charge.estimated:
            self.estimated_tokens += charge.tokens
        if charge.shared_tokens:
            counts = self._shared_counts.setdefault(charge.shared_group, {})
            before = max(counts, default=0)
            counts[charge.shared_tokens] = counts.get(charge.shared_tokens, 0) + 1
            self.shared_pool_tokens += max(0, charge.shared_tokens - before)

    def remove(self, program_id: str) -> Charge:
        charge = self.charges.pop(program_id)
        if program_id in self.marked:
            self._remove_marked(program_id, charge)
            del self.marked[program_id]
        if charge.mode is WeightMode.FULL or (
            charge.mode is WeightMode.DECAYING and self._decaying is None
        ):
            self.full_tokens -= charge.tokens
        elif charge.mode is WeightMode.DECAYING and self._decaying is not None:
            self._decaying.remove(program_id)
        if charge.estimated:
            self.estimated_tokens -= charge.tokens
        if charge.shared_tokens:
            counts = self._shared_counts[charge.shared_group]
            count = counts[charge.shared_tokens] - 1
            if count:
                counts[charge.shared_tokens] = count
            else:
                before = max(counts)
                del counts[charge.shared_tokens]
                self.shared_pool_tokens -= before - max(counts, default=0)
                if not counts:
                    del self._shared_counts[charge.shared_group]
        return charge


__all__ = [
    "BackendLedger",
    "Charge",
    "DecayedSum",
    "WeightMode",
    "ceil_to_page",
    "decay_factor",
    "floor_to_page",
]
