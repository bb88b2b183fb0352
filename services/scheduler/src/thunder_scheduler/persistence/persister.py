"""Write-behind persistence of the program table, and its restore at start-up.

Hot path: the driver feeds the core through :class:`RecordingCore`, which adds the program id
of every event and command to a set (one set insertion per id, no I/O). Every
``flush_interval_s`` the :class:`StatePersister` swaps that set out, exports a checkpoint of
each touched program that is still live (``thunder_scheduling.checkpoint.export_program``),
marks the others for deletion, and hands the batch to a single worker thread that encodes it
and commits it in one SQLite transaction. So the event loop pays O(programs touched) once per
interval however many events touched them, and the disk sees one transaction per interval;
while a batch is being written, the next one accumulates.

Durability: a change is on disk at most ``flush_interval_s`` plus one write after it happened
(0.1 s by default); a kill -9 loses at most that window. A clean shutdown flushes everything.

Restore (``restore(now)``, before the driver starts): the stored checkpoint is loaded into the
fresh core (``checkpoint.restore``); restored programs keep their backend, the paused ones
their wait order, and the tool manager's reconcile then finds them known and adopts their
runtimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from thunder_scheduler.persistence.store import StateStore, encode
from thunder_scheduling.checkpoint import (
    GlobalsCheckpoint,
    ProgramCheckpoint,
    export_globals,
    export_program,
    restore,
)
from thunder_scheduling.commands import Command
from thunder_scheduling.events import BackendFlushed, Event
from thunder_scheduling.scheduler import ProgramScheduler
from thunder_scheduling.snapshot import SchedulerSnapshot

log = logging.getLogger(__name__)


class RecordingCore:
    """The core, recording which programs each call touched (the driver's ``SchedulingCore``).

    Anything else (``policy``, ...) is the wrapped core's."""

    def __init__(self, core: ProgramScheduler) -> None:
        self.inner = core
        self.touched: set[str] = set()

    def handle(self, event: Event) -> list[Command]:
        commands = self.inner.handle(event)
        program_id = getattr(event, "program_id", None)
        touched = self.touched
        if program_id is not None:
            touched.add(program_id)
        for command in commands:
            touched.add(command.program_id)
        if isinstance(event, BackendFlushed):  # every live program's cached-prefix fields
            touched.update(p.program_id for p in self.inner.snapshot().programs
                           if p.end_status is None)
        return commands

    def tick(self, now: float) -> list[Command]:
        commands = self.inner.tick(now)
        for command in commands:
            self.touched.add(command.program_id)
        return commands

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def has_program(self, program_id: str) -> bool:
        return self.inner.has_program(program_id)

    def route_untagged(self, at: float) -> str | None:
        return self.inner.route_untagged(at)

    def snapshot(self) -> SchedulerSnapshot:
        return self.inner.snapshot()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


Batch = tuple[list[ProgramCheckpoint], list[str], GlobalsCheckpoint]


class StatePersister:
    def __init__(self, store: StateStore, core: RecordingCore, *,
                 flush_interval_s: float = 0.1) -> None:
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.store = store
        self.core = core
        self.flush_interval_s = flush_interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thunder-state")
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.flushes = 0
        self.rows_written = 0

    def restore(self, now: float) -> list[ProgramCheckpoint]:
        """Load the stored table into the (fresh) core; the programs restored."""
        globals_, programs = self.store.load()
        if globals_ is None:
            return []
        ids = set(restore(self.core.inner, globals_, programs, now))
        self.core.touched.clear()
        log.info("restored %d programs from %s", len(ids), self.store.path)
        return [c for c in programs if c.program_id in ids]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="thunder-state-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a full disk must not stop the service; the next batch retries
                log.exception("writing the state file %s failed", self.store.path)

    def _collect(self) -> Batch:
        touched, self.core.touched = self.core.touched, set()
        upserts: list[ProgramCheckpoint] = []
        deletes: list[str] = []
        for program_id in touched:
            checkpoint = export_program(self.core.inner, program_id)
            if checkpoint is None:
                deletes.append(program_id)
            else:
                upserts.append(checkpoint)
        return upserts, deletes, export_globals(self.core.inner)

    def _write(self, batch: Batch) -> int:
        upserts, deletes, globals_ = batch
        self.store.write(((c.program_id, encode(c)) for c in upserts), deletes, encode(globals_))
        return len(upserts) + len(deletes)

    async def flush(self) -> None:
        """Write what changed since the last flush (one transaction, in the worker thread)."""
        async with self._lock:
            batch = self._collect()
            if not batch[0] and not batch[1] and self.flushes:
                return
            try:
                rows = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._write, batch
                )
            except BaseException:
                self.core.touched.update(c.program_id for c in batch[0])
                self.core.touched.update(batch[1])
                raise
            self.flushes += 1
            self.rows_written += rows

    async def aclose(self) -> None:
        """Stop the writer, flush the rest, close the file."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
        finally:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
            self._executor.shutdown(wait=True)


__all__ = ["RecordingCore", "StatePersister"]
