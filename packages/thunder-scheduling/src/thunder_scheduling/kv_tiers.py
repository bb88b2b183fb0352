"""Where a program's KV is (device, host or gone) and what each place wastes.

A backend with a host tier (SGLang's HiCache host pool, llama.cpp's saved slots) reports it on
``BackendUpdated.host_capacity_tokens``: the core's second budget per backend, next to the
device budget of the ledger. ``KvTiers`` tracks, per program, where the core believes its KV
is: on the device (active, or acting and kept), in host memory (paused or offloaded while it
acts; an LRU per backend bounded by the host budget: the oldest entries fall out and are gone),
or gone (never computed, dropped, or pushed out of the host). A program that ends is dropped
from both tiers. The engine itself moves the blocks (HiCache backs device blocks up to host and
loads a host hit back at admission, ``thunder_sim/engine/host_cache.py``); the core's picture
steers admission (an offloaded program weighs nothing on the device budget until its
predicted return) and the load-back ahead of need (``Prewarm`` before a predicted tool end,
which on a HiCache engine is a host hit loaded back).

The host budget is the host pool minus the KV of the programs on the device when the engine
mirrors every device block in host memory (SGLang's default ``write_through``: a device block
is backed up when it is inserted, so the host pool holds the device's copy too, and what a
backend keeps at all is its host pool); ``mirrors_device=False`` for ``write_back`` engines
and llama.cpp slots (the budget is then the whole host tier). A program admitted to the device
can so push the oldest host entries out.

**Waste** (InferCept, arXiv 2402.01869, sec. 4 "min-waste interception"; code
WukLab/InferCept ``vllm/core/scheduler_v2.py``): the memory-time (token-seconds) one program's
KV wastes over its predicted time away ``away_s``, with ``batch`` the tokens of the running
batch on its backend:

* device (InferCept's *preserve*): ``context * away_s``, its KV held idle
  (``w_p = api_remaining_time * seq_blocks * block_size``, scheduler_v2.py L637-638);
* host (*swap*): ``load_s * (context + batch)``, the transfer time during which its memory and
  the batch's make no progress (paper: swap-out and swap-in stall the batch; SGLang overlaps the
  load layer by layer, so this is an upper bound);
* gone (*discard*): ``recompute_s * (context + batch)``, the recomputation holding the batch
  (``discard_waste``, scheduler_v2.py L591-607: chunked recompute time times the running
  batch's memory).

``choose_tier`` takes the least; host only where the host budget has room for the context.
Rates: the backend's load-back rate (``host_load_tokens_per_s``) else ``TierRates``' default;
the prefill rate of recomputation from ``TierRates`` (measured on the h100-qwen3-8b preset:
7.8-11k tokens/s for 5k-80k-token prompts, ``thunder_sim.costmodel``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from thunder_scheduling.config import ConfigError

if TYPE_CHECKING:
    from thunder_scheduling.policy import ActingWeight, PolicyView
    from thunder_scheduling.program_table import Program


class KvTier(StrEnum):
    DEVICE = "device"
    HOST = "host"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class TierRates:
    """Transfer and recompute rates the waste is computed with (tokens per second)."""

    prefill_tokens_per_s: float = 8_000.0
    load_tokens_per_s: float = 400_000.0
    """Load-back rate when the backend reports none (64 GB/s over 147 KB per token)."""

    def __post_init__(self) -> None:
        for name in ("prefill_tokens_per_s", "load_tokens_per_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"TierRates.{name} must be > 0, got {value!r}")


def waste(
    tier: KvTier, context: float, away_s: float, batch: float, rates: TierRates,
    load_tokens_per_s: float | None = None,
) -> float:
    """Memory-time (token-seconds) ``context`` tokens of KV waste in ``tier`` over ``away_s``."""
    if tier is KvTier.DEVICE:
        return context * max(0.0, away_s)
    if tier is KvTier.HOST:
        load = load_tokens_per_s or rates.load_tokens_per_s
        return context / load * (context + batch)
    return context / rates.prefill_tokens_per_s * (context + batch)


def choose_tier(
    context: float, away_s: float, batch: float, rates: TierRates, host_room: bool,
    load_tokens_per_s: float | None = None,
) -> KvTier:
    """The tier of least waste (ties: device, then host); host only with ``host_room``."""
    tiers = (KvTier.DEVICE, KvTier.HOST, KvTier.GONE) if host_room else (
        KvTier.DEVICE, KvTier.GONE)
    return min(tiers, key=lambda t: waste(t, context, away_s, batch, rates, load_tokens_per_s))


class _HostPool:
    __slots__ = ("device_used", "entries", "host_tokens", "load_tokens_per_s", "mirrors", "used")

    def __init__(self) -> None:
        self.host_tokens = 0
        self.mirrors = True
        self.used = 0
        self.device_used = 0
        self.load_tokens_per_s: float | None = None
        self.entries: OrderedDict[str, int] = OrderedDict()
        """Programs whose KV is held in host memory, least recently offloaded first."""

    @property
    def budget(self) -> int:
        """Host tokens for programs off the device: the pool less the device's mirror (the
        programs the core believes on the device) where the engine mirrors it."""
        if self.host_tokens <= 0:
            return 0
        return max(0, self.host_tokens - (self.device_used if self.mirrors else 0))


class KvTiers:
    """The core's picture of where each program's KV is (see the module docstring). Only the
    scheduler changes it; policies read it through ``PolicyView.tiers``."""

    def __init__(self, mirrors_device: bool = True) -> None:
        self.mirrors_device = mirrors_device
        self._pools: dict[str, _HostPool] = {}
        self._host_of: dict[str, str] = {}
        self._on_device: dict[str, tuple[str, int]] = {}

    # -- reading ------------------------------------------------------------------------------

    def tier(self, program_id: str) -> KvTier:
        if program_id in self._on_device:
            return KvTier.DEVICE
        if program_id in self._host_of:
            return KvTier.HOST
        return KvTier.GONE

    def has_host(self, backend: str | None) -> bool:
        pool = self._pools.get(backend) if backend is not None else None
        return pool is not None and pool.budget > 0

    def host_budget(self, backend: str) -> int:
        pool = self._pools.get(backend)
        return 0 if pool is None else pool.budget

    def host_used(self, backend: str) -> int:
        pool = self._pools.get(backend)
        return 0 if pool is None else pool.used

    def device_tokens(self, backend: str) -> int:
        """Tokens of the programs the core believes on ``backend``'s device (at admission)."""
        pool = self._pools.get(backend)
        return 0 if pool is None else pool.device_used

    def host_room(self, backend: str | None, tokens: int) -> bool:
        """Whether ``tokens`` fit the backend's host budget (pushing older entries out)."""
        pool = self._pools.get(backend) if backend is not None else None
        return pool is not None and 0 < tokens <= pool.budget

    def load_tokens_per_s(self, backend: str | None) -> float | None:
        pool = self._pools.get(backend) if backend is not None else None
        return None if pool is None else pool.load_tokens_per_s

    # -- changes (the scheduler's) --------------------------------------------------------------

    def configure(
        self, backend: str, host_tokens: int, load_tokens_per_s: float | None
    ) -> list[str]:
        """A backend's budgets changed; returns the programs pushed out of its host."""
        pool = self._pools.setdefault(backend, _HostPool())
        pool.host_tokens = host_tokens
        pool.mirrors = self.mirrors_device
        pool.load_tokens_per_s = load_tokens_per_s
        return self._shrink(pool)

    def on_device(self, program_id: str, backend: str, tokens: int) -> list[str]:
        """The program's KV is on ``backend``'s device (``tokens`` of it); returns the
        programs pushed out of the host by its mirror."""
        self._leave_host(program_id)
        self._leave_device(program_id)
        pool = self._pools.get(backend)
        if pool is None:
            return []
        self._on_device[program_id] = (backend, tokens)
        pool.device_used += tokens
        return self._shrink(pool)

    def to_host(self, program_id: str, backend: str, tokens: int) -> list[str]:
        """The program's KV goes to ``backend``'s host memory (most recent); returns the
        programs pushed out (gone). Without room the program itself is gone."""
        self._leave_device(program_id)
        self._leave_host(program_id)
        pool = self._pools.get(backend)
        if pool is None or not 0 < tokens <= pool.budget:
            return []
        pool.entries[program_id] = tokens
        pool.used += tokens
        self._host_of[program_id] = backend
        return self._shrink(pool)

    def drop(self, program_id: str) -> None:
        """Gone from both tiers (ended, dropped by the policy, or its backend went away)."""
        self._leave_device(program_id)
        self._leave_host(program_id)

    def flushed(self, backend: str) -> list[str]:
        """The backend's caches were emptied: every program held there is gone."""
        gone = [pid for pid, (b, _tokens) in self._on_device.items() if b == backend]
        for pid in gone:
            self._leave_device(pid)
        pool = self._pools.get(backend)
        if pool is not None:
            gone.extend(pool.entries)
            for pid in pool.entries:
                self._host_of.pop(pid, None)
            pool.entries.clear()
            pool.used = 0
        return gone

    def _leave_device(self, program_id: str) -> None:
        placed = self._on_device.pop(program_id, None)
        if placed is not None:
            self._pools[placed[0]].device_used -= placed[1]

    def _leave_host(self, program_id: str) -> None:
        backend = self._host_of.pop(program_id, None)
        if backend is not None:
            pool = self._pools[backend]
            pool.used -= pool.entries.pop(program_id)

    def _shrink(self, pool: _HostPool) -> list[str]:
        pushed: list[str] = []
        while pool.used > pool.budget and pool.entries:
            pid, tokens = pool.entries.popitem(last=False)
            pool.used -= tokens
            self._host_of.pop(pid, None)
            pushed.append(pid)
        return pushed


def away_s(program: Program, now: float, unknown_s: float) -> float:
    """Predicted seconds until the program's next request: its predicted tool end, else
    ``unknown_s`` after it left the LLM."""
    end = program.expected_tool_end_at()
    if end is None:
        end = (program.acting_since if program.acting_since is not None else now) + unknown_s
    return max(0.0, end - now)


def acting_tier(
    program: Program, view: PolicyView, rates: TierRates, unknown_s: float
) -> KvTier:
    """InferCept's per-interception choice for an acting program on its backend: keep it on
    the device, offload it to host, or let it go, whichever wastes least."""
    backend = program.backend
    tiers = view.tiers
    context = program.context_tokens
    ledger = view.backends().get(backend) if backend is not None else None
    batch = ledger.used_tokens(view.now) if ledger is not None else 0.0
    return choose_tier(
        context, away_s(program, view.now, unknown_s), batch, rates,
        tiers.host_room(backend, context), tiers.load_tokens_per_s(backend),
    )


def load_lead_s(program: Program, view: PolicyView, rates: TierRates) -> float:
    """How long before its predicted return an offloaded program is loaded back: the
    scheduler's prewarm lead, or the transfer time if that is longer."""
    rate = view.tiers.load_tokens_per_s(program.backend) or rates.load_tokens_per_s
    return max(view.prewarm_lead_s, program.context_tokens / rate)


def offload_weight(
    program: Program, view: PolicyView, rates: TierRates, unknown_s: float
) -> ActingWeight | None:
    """The acting weight of a program offloaded to host while it acts, when that wastes least
    on a backend with a host tier (``acting_tier``): nothing on the device until its
    predicted return minus the load-back lead, then full, loaded back by a ``Prewarm``.
    ``None``: keep the policy's own weight (no host tier, or device or gone wastes less)."""
    from thunder_scheduling.accounting import WeightMode
    from thunder_scheduling.policy import ActingWeight

    if not view.tiers.has_host(program.backend):
        return None
    if acting_tier(program, view, rates, unknown_s) is not KvTier.HOST:
        return None
    end = program.expected_tool_end_at()
    switch_at = None if end is None else end - load_lead_s(program, view, rates)
    return ActingWeight(
        WeightMode.NONE, switch_at=switch_at, then=WeightMode.FULL, prewarm_at_switch=True,
        tier=KvTier.HOST,
    )


__all__ = [
    "KvTier",
    "KvTiers",
    "TierRates",
    "acting_tier",
    "away_s",
    "choose_tier",
    "load_lead_s",
    "offload_weight",
    "waste",
]
