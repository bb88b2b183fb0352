"""Warm pools: per spec, ready runtimes that no program holds yet (a plain data structure).

A pool entry is only handed out for the spec content it was made from (``spec_hash``), so a
re-registered spec never serves a stale sandbox. Targets come from ``RuntimeSpec.pool_size``
plus the queue-driven demand the manager adds; the manager fills pools under the global
runtime-count and disk budgets and drains them first when a program needs room.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thunder_scheduler.tools.manager import Runtime


@dataclass
class _Pool:
    ready: deque[Runtime] = field(default_factory=deque)
    filling: int = 0


class WarmPools:
    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}

    def _pool(self, spec_name: str) -> _Pool:
        return self._pools.setdefault(spec_name, _Pool())

    def take(self, spec_name: str, spec_hash: str) -> Runtime | None:
        pool = self._pools.get(spec_name)
        while pool and pool.ready:
            runtime = pool.ready.popleft()
            if runtime.spec_hash == spec_hash:
                return runtime
            pool.ready.append(runtime)  # stale content: leave it for drain_stale
            if all(r.spec_hash != spec_hash for r in pool.ready):
                return None
        return None

    def put(self, runtime: Runtime) -> None:
        self._pool(runtime.spec_name).ready.append(runtime)

    def drain(self, spec_name: str, keep_hash: str | None = None) -> list[Runtime]:
        """Remove and return the runtimes of ``spec_name`` (all, or those not of keep_hash)."""
        pool = self._pools.get(spec_name)
        if pool is None:
            return []
        gone = [r for r in pool.ready if r.spec_hash != keep_hash]
        pool.ready = deque(r for r in pool.ready if r.spec_hash == keep_hash)
        return gone

    def pop_any(self) -> Runtime | None:
        """One runtime from the largest pool (to free a budget slot for a program)."""
        pools = [p for p in self._pools.values() if p.ready]
        if not pools:
            return None
        return max(pools, key=lambda p: len(p.ready)).ready.popleft()

    def ready_count(self, spec_name: str | None = None) -> int:
        if spec_name is not None:
            pool = self._pools.get(spec_name)
            return len(pool.ready) if pool else 0
        return sum(len(p.ready) for p in self._pools.values())

    def filling(self, spec_name: str) -> int:
        return self._pool(spec_name).filling

    def add_filling(self, spec_name: str, delta: int) -> None:
        self._pool(spec_name).filling += delta

    def filling_total(self) -> int:
        return sum(p.filling for p in self._pools.values())

    def all_ready(self) -> list[Runtime]:
        return [r for p in self._pools.values() for r in p.ready]

    def clear(self) -> list[Runtime]:
        everything = self.all_ready()
        for pool in self._pools.values():
            pool.ready.clear()
        return everything


__all__ = ["WarmPools"]
