"""Ordered candidate structures, so no decision scans every program.

* :class:`KeyedHeap`: a binary heap of ``(key, seq, program_id, version)`` with lazy deletion.
  A program's entry is valid while the program's ``version`` matches; any change to the
  program bumps its version and pushes a fresh entry, stale ones are skipped when popped and
  the heap is rebuilt when stale entries outnumber live ones 3 to 1. Push and pop are
  O(log n). Used per backend for pause candidates and globally for the waiting queue.
* :class:`WaitingQueue`: the global queue of programs that need a backend (paused, or new and
  not yet placed): the policy-ordered heap plus a FIFO by wait start (a dict keeps insertion
  order, and events arrive in time order), which gives the oldest waiter in O(1) for aging.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from thunder_scheduling.program_table import Program

Entry = tuple[tuple[float, ...], int, str, int]


class KeyedHeap:
    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._live: dict[str, int] = {}
        """program id -> version of its valid entry."""

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self._live

    def push(self, program: Program, key: tuple[float, ...]) -> None:
        self._live[program.program_id] = program.version
        heapq.heappush(self._heap, (key, program.seq, program.program_id, program.version))
        if len(self._heap) > 3 * len(self._live) + 64:
            self._compact()

    def discard(self, program_id: str) -> None:
        self._live.pop(program_id, None)

    def _valid(self, entry: Entry) -> bool:
        return self._live.get(entry[2]) == entry[3]

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._valid(e)]
        heapq.heapify(self._heap)

    def pop_valid(self) -> Entry | None:
        """Remove and return the smallest valid entry (the program stays a member)."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._valid(entry):
                return entry
        return None

    def push_back(self, entries: list[Entry]) -> None:
        """Return entries taken by ``pop_valid`` that are still members."""
        for entry in entries:
            if self._valid(entry):
                heapq.heappush(self._heap, entry)

    def ordered(self) -> Iterator[str]:
        """Members in key order (O(n log n): observation and tests only)."""
        return (e[2] for e in sorted(e for e in self._heap if self._valid(e)))


class WaitingQueue:
    """Programs that need a backend: policy order (heap) and wait order (FIFO)."""

    __slots__ = ("_fifo", "heap")

    def __init__(self) -> None:
        self.heap = KeyedHeap()
        self._fifo: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._fifo)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self._fifo

    def add(self, program: Program, key: tuple[float, ...], since: float) -> None:
        if program.program_id not in self._fifo:
            self._fifo[program.program_id] = since
        self.heap.push(program, key)

    def rekey(self, program: Program, key: tuple[float, ...]) -> None:
        if program.program_id in self._fifo:
            self.heap.push(program, key)

    def remove(self, program_id: str) -> None:
        self._fifo.pop(program_id, None)
        self.heap.discard(program_id)

    def fifo_ids(self) -> list[str]:
        """Every waiter, oldest first (O(n))."""
        return list(self._fifo)

    def oldest(self) -> tuple[str, float] | None:
        for program_id, since in self._fifo.items():
            return program_id, since
        return None

    def waited_at_least(self, wait_s: float, now: float) -> list[str]:
        """Waiters with ``since + wait_s <= now``, oldest first: O(result). Written as the
        sum (not ``since <= now - wait_s``) so it agrees bit for bit with the deadline
        ``since + wait_s`` that ``ProgramScheduler.next_deadline`` reports."""
        found: list[str] = []
        for program_id, since in self._fifo.items():
            if since + wait_s > now:
                break
            found.append(program_id)
        return found

    def head(self) -> str | None:
        entry = self.heap.pop_valid()
        if entry is None:
            return None
        self.heap.push_back([entry])
        return entry[2]


__all__ = ["KeyedHeap", "WaitingQueue"]
