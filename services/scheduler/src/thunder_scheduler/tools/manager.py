"""ToolManager: runtimes tied to the program lifecycle (acquire, exec, release, GC, pools).

Algorithm:

- *Specs* are registered by name; registering starts the image build in the background
  (``ImageBuilder``: bounded concurrency, single flight per spec content) and fills the spec's
  warm pool up to ``pool_size``.
- *Queue-driven preparation*: ``on_program_admitted(id, spec_hint)`` and
  ``on_program_restoring(id)`` start a runtime for that program at once (a pool runtime if one
  is warm, else a new one) so that it is ready before the first tool call; ``acquire`` then
  returns it. The pool is refilled behind every hand-over.
- *Queue-driven pool size*: the scheduler's driver reports, per spec, how many started
  programs wait for their first admission (``on_queue_demand(spec, n)``). A spec's pool target
  is ``max(pool_size, min(n, queue_pool_max))``: every queued program finds a warm runtime
  when it is admitted, so its preparation is a hand-over (~20 ms on dockerd, bench/tools)
  rather than a cold create (~600 ms) racing its first tool call. Targets never shrink the
  pool actively: surplus runtimes are handed out, or evicted first when a program needs a
  budget slot or the disk budget is exceeded.
- *Acquire* order: the program's prepared runtime, then the warm pool (a rename, ~10 ms), then
  a cold create. Budget: held + pooled + *reserved* runtimes never exceed ``max_runtimes``. A
  slot is reserved synchronously, before the first ``await``, by every path that will make or
  hand over a runtime (a cold create, a pool refill batch, a pool runtime being assigned), and
  released only once the runtime is counted as held or pooled, or destroyed; so concurrent
  acquires and refills can never overshoot the cap. A program that needs a slot evicts a
  pooled runtime first, else gets ``BudgetExhausted``.
- *Liveness*: before a runtime is handed out, the backend is asked whether its keep-alive
  process still runs (``alive``). A dead pool or prepared runtime is destroyed and replaced by a
  cold one; a dead fresh runtime means the spec's ``command`` exits, and the acquire fails with
  ``CreateFailed`` (409) naming it, leaving nothing behind.
- *Pool refills* run whenever a pool is below its target and room allows: after each
  hand-over, whenever slots are freed (release, program end, a failed create), and every
  ``pool_check_interval_s`` as a backstop, so a pool drained by budget evictions comes back
  as soon as the programs holding the budget let go.
- *Lifecycle GC*: ``on_program_ended`` (any reason) tears down every runtime the program holds
  or is being prepared for; later acquires for it get 409. Disk is re-measured every
  ``disk_poll_interval_s``; above ``disk_budget_bytes`` pools of unneeded specs are drained and
  their images evicted (``gc.plan_image_eviction``).
- *Reconcile* at ``start()``: runtimes carrying our labels are adopted when their program is
  known and removed otherwise (``gc.plan_reconcile``), so a SIGKILLed manager leaks nothing.

Failures never lose a program: a failed build or create leaves nothing behind (the backend
removes half-made runtimes) and the caller gets a ``ToolError`` it can retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from thunder_core.contract import Paths
from thunder_core.runtimes import (
    EXEC_OUTPUT_LIMIT_BYTES,
    ExecRequest,
    ExecResult,
    RuntimeSource,
    RuntimeSpec,
    RuntimeSpecView,
    RuntimeView,
)
from thunder_scheduler.tools.accounting import ToolMetrics
from thunder_scheduler.tools.base import (
    POOL_OWNER,
    BackendRuntime,
    BackendUnavailable,
    BudgetExhausted,
    CreateFailed,
    ExecTimeout,
    ProgramNotFound,
    RuntimeBackend,
    RuntimeConflict,
    RuntimeLabels,
    RuntimeNotFound,
    ToolError,
    program_key,
)
from thunder_scheduler.tools.builder import ImageBuilder
from thunder_scheduler.tools.gc import ImageCandidate, plan_image_eviction, plan_reconcile
from thunder_scheduler.tools.pools import WarmPools
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_scheduler.tools.specs import SpecEntry, SpecRegistry

log = logging.getLogger(__name__)

AcquiredHook = Callable[[str, RuntimeView], None]


@dataclass
class Runtime:
    runtime_id: str
    spec_name: str
    spec_hash: str
    backend_runtime: BackendRuntime
    owner: str | None
    created_at: float
    source: RuntimeSource = "cold"
    handed_out: bool = False
    disk_bytes: int = 0
    acquire_s: float = 0.0
    labels: RuntimeLabels | None = field(default=None, repr=False)


class ToolManager:
    def __init__(
        self,
        settings: ToolManagerSettings,
        backend: RuntimeBackend | None,
        *,
        known_programs: Callable[[], set[str]],
        program_exists: Callable[[str], bool] | None = None,
        on_runtime_acquired: AcquiredHook | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._known_programs = known_programs
        self._program_exists = program_exists or (lambda pid: pid in known_programs())
        self._on_acquired = on_runtime_acquired
        self.specs = SpecRegistry()
        self.pools = WarmPools()
        self.metrics = ToolMetrics()
        self._builder = ImageBuilder(backend, settings.label_prefix, settings.build_concurrency) \
            if backend is not None else None
        self.runtimes: dict[str, Runtime] = {}
        self._by_program: dict[str, set[str]] = {}
        self._hints: dict[str, str] = {}
        self._queue_demand: dict[str, int] = {}
        self._preparing: dict[str, asyncio.Task[Runtime]] = {}
        self._creating = 0
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._refills: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        """Set by ``close()``: no refill may start after it (its runtime would outlive close)."""
        self.reconciled: dict[str, int] = {"adopted": 0, "reclaimed": 0}

    # -- lifecycle of the manager ---------------------------------------------------------

    def _backend(self) -> RuntimeBackend:
        if self.backend is None:
            raise BackendUnavailable("no runtime backend configured (tools backend = none)")
        return self.backend

    def _builder_(self) -> ImageBuilder:
        assert self._builder is not None
        return self._builder

    async def start(self) -> None:
        """Reconcile with what the backend holds, then start the disk poller."""
        if self.backend is None:
            return
        observed = await self.backend.list_runtimes(self.settings.label_prefix)
        plan = plan_reconcile(observed, self._known_programs())
        for seen, program_id in plan.adopt:
            runtime = Runtime(
                seen.runtime_id, seen.spec_name, "", BackendRuntime(
                    seen.runtime_id, seen.ref, self.settings.publish_host, dict(seen.ports),
                    seen.volumes,
                ), program_id, time.time(), source="adopted", handed_out=True,
                disk_bytes=seen.disk_bytes,
            )
            self._add(runtime)
        await asyncio.gather(*(
            self._destroy_quietly(
                BackendRuntime(s.runtime_id, s.ref, "", dict(s.ports), s.volumes), "reconcile"
            )
            for s in plan.reclaim
        ))
        self.reconciled = {"adopted": len(plan.adopt), "reclaimed": len(plan.reclaim)}
        if plan.adopt or plan.reclaim:
            log.info("tool manager reconcile: adopted %d, reclaimed %d runtimes",
                     len(plan.adopt), len(plan.reclaim))
        self._poller = asyncio.create_task(self._poll_disk(), name="tools:disk-poll")
        self._keeper = asyncio.create_task(self._keep_pools(), name="tools:pool-keeper")

    async def close(self) -> None:
        """Stop background work and tear down every runtime this manager made."""
        self._closing = True
        tasks = [*self._refills.values(), *self._preparing.values()]
        if self._poller is not None:
            tasks.append(self._poller)
        if self._keeper is not None:
            tasks.append(self._keeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)  # teardowns finish
        if self._builder is not None:
            await self._builder.close()
        doomed = [*self.pools.clear(), *self.runtimes.values()]
        self.runtimes.clear()
        self._by_program.clear()
        await asyncio.gather(
            *(self._destroy_quietly(r.backend_runtime, "shutdown") for r in doomed)
        )

    # -- specs ----------------------------------------------------------------------------

    def register_spec(self, spec: RuntimeSpec) -> RuntimeSpecView:
        backend = self._backend()
        del backend
        entry, replaced = self.specs.register(spec)
        builder = self._builder_()
        builder.reset_failure(entry)
        if replaced is not None:
            for stale in self.pools.drain(spec.name, keep_hash=entry.spec_hash):
                self._spawn(self._destroy_quietly(stale.backend_runtime, "spec_replaced"))
        builder.start(entry)
        self._schedule_refill(spec.name)
        return self.spec_view(entry)

    def spec_view(self, entry: SpecEntry) -> RuntimeSpecView:
        rec = self._builder_().record(entry) if self._builder is not None else None
        return RuntimeSpecView(
            spec=entry.spec, spec_hash=entry.spec_hash,
            image_state=rec.state if rec else "pending",
            image_ref=rec.info.ref if rec and rec.info else None,
            image_bytes=rec.info.size_bytes if rec and rec.info else 0,
            image_error=rec.error.message if rec and rec.error else None,
            pool_ready=self.pools.ready_count(entry.name), pool_target=self.pool_target(entry),
            live_runtimes=sum(1 for r in self.runtimes.values() if r.spec_name == entry.name),
        )

    # -- queue-driven preparation ---------------------------------------------------------

    async def on_program_admitted(self, program_id: str, spec_hint: str | None) -> None:
        if spec_hint is not None:
            self._hints[program_id] = spec_hint
        self._prepare(program_id)

    async def on_program_restoring(self, program_id: str) -> None:
        self._prepare(program_id)

    def on_queue_demand(self, spec_name: str, queued_programs: int) -> None:
        """``queued_programs`` started programs of ``spec_name`` wait for admission."""
        if queued_programs <= 0:
            self._queue_demand.pop(spec_name, None)
            return
        before = self._queue_demand.get(spec_name, 0)
        self._queue_demand[spec_name] = queued_programs
        if queued_programs > before and self.specs.find(spec_name) is not None:
            self._schedule_refill(spec_name)

    def pool_target(self, entry: SpecEntry) -> int:
        """Warm runtimes wanted for ``entry``: its ``pool_size``, raised to the queue."""
        queued = min(self._queue_demand.get(entry.name, 0), self.settings.queue_pool_max)
        return max(entry.spec.pool_size, queued)

    def _prepare(self, program_id: str) -> None:
        spec_name = self._hints.get(program_id)
        if (not self.settings.prepare_on_admit or spec_name is None or self.backend is None
                or program_id in self._ended):
            return
        running = self._preparing.get(program_id)
        if running is not None and not running.done():
            return
        entry = self.specs.find(spec_name)
        if entry is None:
            return
        held = self._by_program.get(program_id, set())
        if any(self.runtimes[rid].spec_name == spec_name and not self.runtimes[rid].handed_out
               for rid in held):
            return
        if not self._has_slot():
            return
        task = asyncio.create_task(
            self._obtain(program_id, entry, prepared=True), name=f"prepare:{program_id}"
        )
        self._preparing[program_id] = task
        task.add_done_callback(functools.partial(self._prepared_done, program_id))

    def _prepared_done(self, program_id: str, task: asyncio.Task[Runtime]) -> None:
        if self._preparing.get(program_id) is task:
            del self._preparing[program_id]
        if not task.cancelled() and task.exception() is not None:
            log.warning("preparing a runtime for %s failed: %s", program_id, task.exception())

    # -- acquire / release / exec ---------------------------------------------------------

    def _check_program(self, program_id: str) -> None:
        if program_id in self._ended:
            raise RuntimeConflict(f"program {program_id!r} has ended ({self._ended[program_id]})")
        if not self._program_exists(program_id):
            raise ProgramNotFound(f"no program {program_id!r}; start it first",
                                  detail={"program_id": program_id})

    async def acquire(self, program_id: str, spec_name: str) -> RuntimeView:
        """A ready runtime of ``spec_name`` for ``program_id`` (prepared, pooled, or new)."""
        started = time.monotonic()
        self._check_program(program_id)
        entry = self.specs.get(spec_name)
        self._backend()
        runtime = self._take_prepared(program_id, entry)
        if runtime is None and program_id in self._preparing:
            with contextlib.suppress(ToolError):
                await asyncio.shield(self._preparing[program_id])
            runtime = self._take_prepared(program_id, entry)
        if runtime is None:
            runtime = await self._obtain(program_id, entry, prepared=False)
        if not await self._alive(runtime):
            fresh = runtime.source == "cold"
            self._forget(runtime)
            await asyncio.shield(self._destroy_quietly(runtime.backend_runtime, "dead"))
            self._slots_freed()
            if fresh:
                raise self._keepalive_exited(entry)
            runtime = await self._obtain(program_id, entry, prepared=False)
            if not await self._alive(runtime):
                self._forget(runtime)
                await asyncio.shield(self._destroy_quietly(runtime.backend_runtime, "dead"))
                self._slots_freed()
                raise self._keepalive_exited(entry)
        runtime.handed_out = True
        runtime.acquire_s = time.monotonic() - started
        self.metrics.acquire_seconds.labels(runtime.source).observe(runtime.acquire_s)
        view = self._view(runtime)
        if self._on_acquired is not None:
            self._on_acquired(program_id, view)
        return view

    async def _alive(self, runtime: Runtime) -> bool:
        try:
            return await self._backend().alive(runtime.backend_runtime)
        except ToolError:
            return False

    def _keepalive_exited(self, entry: SpecEntry) -> CreateFailed:
        return CreateFailed(
            f"the keep-alive process of spec {entry.name!r} exited: its command "
            f"{entry.spec.command!r} must keep running for the runtime's life",
            detail={"spec": entry.name, "command": list(entry.spec.command)},
        )

    def _take_prepared(self, program_id: str, entry: SpecEntry) -> Runtime | None:
        for rid in self._by_program.get(program_id, ()):
            runtime = self.runtimes[rid]
            if not runtime.handed_out and runtime.spec_hash == entry.spec_hash:
                return runtime
        return None

    async def _obtain(self, program_id: str, entry: SpecEntry, *, prepared: bool) -> Runtime:
        backend = self._backend()
        owner_key = program_key(program_id)
        runtime = self.pools.take(entry.name, entry.spec_hash)
        if runtime is None:
            self._make_room()
        self._creating += 1  # the slot stays reserved until the runtime is held or destroyed
        try:
            if runtime is not None:
                self._schedule_refill(entry.name)
                assert runtime.labels is not None
                try:
                    await backend.assign(runtime.backend_runtime, runtime.labels, owner_key)
                except BaseException:
                    await asyncio.shield(self._destroy_quietly(runtime.backend_runtime, "failed"))
                    raise
                runtime.source = "prepared" if prepared else "pool"
            else:
                runtime = await self._create(entry, owner_key,
                                             "prepare" if prepared else "acquire")
                runtime.source = "prepared" if prepared else "cold"
            runtime.owner = program_id
            if program_id in self._ended:
                await asyncio.shield(
                    self._destroy_quietly(runtime.backend_runtime, "program_ended")
                )
                raise RuntimeConflict(f"program {program_id!r} ended while its runtime was made")
            self._add(runtime)
        finally:
            self._creating -= 1
            if runtime is None or runtime.runtime_id not in self.runtimes:
                self._slots_freed()
        return runtime

    def _free_slots(self) -> int:
        used = len(self.runtimes) + self.pools.ready_count() + self._creating
        return self.settings.max_runtimes - used

    def _has_slot(self) -> bool:
        return self._free_slots() > 0

    def _slots_freed(self) -> None:
        """Slots came free: refill every pool below its target (each refill checks room)."""
        if self.backend is None or self._free_slots() <= 0:
            return
        for entry in self.specs.all():
            if self.pools.ready_count(entry.name) + self.pools.filling(entry.name) \
                    < self.pool_target(entry):
                self._schedule_refill(entry.name)

    def _make_room(self) -> None:
        if self._has_slot():
            return
        victim = self.pools.pop_any()
        if victim is None:
            raise BudgetExhausted(
                f"all {self.settings.max_runtimes} runtimes are held by programs",
                detail={"max_runtimes": self.settings.max_runtimes},
            )
        self._spawn(self._destroy_quietly(victim.backend_runtime, "budget"))

    async def _create(self, entry: SpecEntry, owner_key: str, purpose: str) -> Runtime:
        """Make a runtime; the caller has reserved its slot (``_creating``)."""
        backend = self._backend()
        try:
            image = await self._builder_().get(entry)
        except ToolError:
            self.metrics.builds.labels("failed").inc()
            raise
        runtime_id = uuid.uuid4().hex[:16]
        labels = RuntimeLabels(self.settings.label_prefix, runtime_id, entry.name,
                               entry.spec_hash)
        made = await backend.create(entry.spec, image, labels, owner_key)
        self.metrics.runtimes_created.labels(purpose).inc()
        return Runtime(runtime_id, entry.name, entry.spec_hash, made, None, time.time(),
                       labels=labels)

    def _add(self, runtime: Runtime) -> None:
        assert runtime.owner is not None
        self.runtimes[runtime.runtime_id] = runtime
        self._by_program.setdefault(runtime.owner, set()).add(runtime.runtime_id)

    def _owned(self, program_id: str, runtime_id: str) -> Runtime:
        runtime = self.runtimes.get(runtime_id)
        if runtime is None or runtime.owner != program_id:
            raise RuntimeNotFound(f"program {program_id!r} holds no runtime {runtime_id!r}",
                                  detail={"program_id": program_id, "runtime_id": runtime_id})
        return runtime

    def list_runtimes(self, program_id: str) -> list[RuntimeView]:
        if program_id not in self._by_program and not self._program_exists(program_id):
            raise ProgramNotFound(f"no program {program_id!r}")
        return [self._view(self.runtimes[rid])
                for rid in sorted(self._by_program.get(program_id, ()))]

    async def release(self, program_id: str, runtime_id: str) -> None:
        runtime = self._owned(program_id, runtime_id)
        self._forget(runtime)
        try:
            await self._destroy(runtime.backend_runtime, "released")
        finally:
            self._slots_freed()

    async def exec(self, program_id: str, runtime_id: str, request: ExecRequest) -> ExecResult:
        runtime = self._owned(program_id, runtime_id)
        argv = ["sh", "-c", request.command] if isinstance(request.command, str) \
            else list(request.command)
        timeout_s = request.timeout_s or self.settings.exec_timeout_s
        try:
            out = await self._backend().exec(
                runtime.backend_runtime, argv, timeout_s=timeout_s, workdir=request.workdir,
                env=request.env,
            )
        except ExecTimeout:
            self.metrics.exec_seconds.labels("timeout").observe(timeout_s)
            raise
        self.metrics.exec_seconds.labels("ok").observe(out.duration_s)
        limit = EXEC_OUTPUT_LIMIT_BYTES
        return ExecResult(
            exit_code=out.exit_code, duration_s=out.duration_s,
            stdout=out.stdout[-limit:].decode(errors="replace"),
            stderr=out.stderr[-limit:].decode(errors="replace"),
            stdout_truncated=len(out.stdout) > limit, stderr_truncated=len(out.stderr) > limit,
        )

    # -- lifecycle GC ---------------------------------------------------------------------

    async def on_program_ended(self, program_id: str, reason: str) -> None:
        """Tear down everything ``program_id`` holds or is being prepared for. Idempotent."""
        self._ended[program_id] = reason
        self._ended.move_to_end(program_id)
        while len(self._ended) > self.settings.ended_programs_memory:
            self._ended.popitem(last=False)
        self._hints.pop(program_id, None)
        task = self._preparing.pop(program_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        doomed = [self.runtimes[rid] for rid in self._by_program.pop(program_id, set())]
        for runtime in doomed:
            self.runtimes.pop(runtime.runtime_id, None)
        await asyncio.gather(*(
            self._destroy_quietly(r.backend_runtime, f"program_{reason}") for r in doomed
        ))
        if doomed:
            self._slots_freed()

    def _forget(self, runtime: Runtime) -> None:
        self.runtimes.pop(runtime.runtime_id, None)
        if runtime.owner is not None:
            held = self._by_program.get(runtime.owner)
            if held is not None:
                held.discard(runtime.runtime_id)
                if not held:
                    del self._by_program[runtime.owner]

    async def _destroy(self, runtime: BackendRuntime, reason: str) -> None:
        await self._backend().destroy(runtime)
        self.metrics.runtimes_destroyed.labels(reason.split(":", maxsplit=1)[0][:32]).inc()

    async def _destroy_quietly(self, runtime: BackendRuntime, reason: str) -> None:
        try:
            await self._destroy(runtime, reason)
        except ToolError as exc:  # the next reconcile removes what is left
            log.warning("destroying runtime %s failed: %s", runtime.runtime_id, exc)

    def _spawn(self, coro: Any) -> None:
        """Run a teardown in the background (``close`` waits for it rather than cancelling)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- pools ----------------------------------------------------------------------------

    def _schedule_refill(self, spec_name: str) -> None:
        if self.backend is None or self._closing:
            return
        current = self._refills.get(spec_name)
        if current is None or current.done():
            self._refills[spec_name] = asyncio.create_task(
                self._refill(spec_name), name=f"refill:{spec_name}"
            )

    async def _refill(self, spec_name: str) -> None:
        while True:
            entry = self.specs.find(spec_name)
            if entry is None:
                return
            deficit = self.pool_target(entry) - self.pools.ready_count(spec_name) \
                - self.pools.filling(spec_name)
            if deficit <= 0 or not self._has_slot() or self._over_disk_budget():
                return
            batch = min(deficit, self.settings.docker_concurrency, self._free_slots())
            if batch <= 0:
                return
            self.pools.add_filling(spec_name, batch)
            self._creating += batch  # reserved now, before any create yields
            creates = asyncio.gather(
                *(self._create(entry, POOL_OWNER, "pool") for _ in range(batch)),
                return_exceptions=True,
            )
            try:
                # Shielded: a cancel (``close()``) must not drop runtimes that were made (or
                # are being made) before it landed; they are awaited and destroyed instead.
                results = await asyncio.shield(creates)
            except asyncio.CancelledError:
                made = await creates
                await asyncio.gather(*(
                    self._destroy_quietly(r.backend_runtime, "shutdown")
                    for r in made if isinstance(r, Runtime)
                ))
                raise
            finally:
                self.pools.add_filling(spec_name, -batch)
                self._creating -= batch
            for result in results:
                if isinstance(result, Runtime):
                    self.pools.put(result)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                log.warning("refilling pool %s: %s", spec_name, failures[0])
                return

    # -- disk accounting and image GC -----------------------------------------------------

    def _disk_total(self) -> int:
        runtime_bytes = sum(r.disk_bytes for r in self.runtimes.values())
        runtime_bytes += sum(r.disk_bytes for r in self.pools.all_ready())
        image_bytes = self._builder.image_bytes() if self._builder is not None else 0
        return runtime_bytes + image_bytes

    def _over_disk_budget(self) -> bool:
        return self._disk_total() > self.settings.disk_budget_bytes

    async def measure_disk(self) -> None:
        """Re-read per-runtime disk from the backend, then enforce the disk budget."""
        backend = self._backend()
        listed = await backend.list_runtimes(self.settings.label_prefix)
        observed = {o.runtime_id: o for o in listed}
        for runtime in [*self.runtimes.values(), *self.pools.all_ready()]:
            seen = observed.get(runtime.runtime_id)
            if seen is not None:
                runtime.disk_bytes = seen.disk_bytes
        await self.enforce_disk_budget()

    def needed_specs(self) -> set[str]:
        needed = {r.spec_name for r in self.runtimes.values()}
        needed.update(self._hints.values())
        return needed

    async def enforce_disk_budget(self) -> list[str]:
        """Drain pools and remove images of unneeded specs while over budget; return hashes."""
        if self._builder is None or not self._over_disk_budget():
            return []
        needed = self.needed_specs()
        for entry in self.specs.all():
            if entry.name not in needed:
                for runtime in self.pools.drain(entry.name):
                    await self._destroy_quietly(runtime.backend_runtime, "disk_budget")
        candidates = [
            ImageCandidate(h, rec.entry.name, rec.info.size_bytes, rec.last_used_s)
            for h, rec in self._builder.records.items()
            if rec.info is not None and rec.info.built_by_us and rec.state == "ready"
        ]
        victims = plan_image_eviction(candidates, needed, self._disk_total(),
                                      self.settings.disk_budget_bytes)
        for spec_hash in victims:
            await self._builder.evict(spec_hash)
            self.metrics.images_evicted.inc()
        return victims

    async def _poll_disk(self) -> None:
        while True:
            await asyncio.sleep(self.settings.disk_poll_interval_s)
            try:
                await self.measure_disk()
            except ToolError as exc:
                log.warning("tool disk poll failed: %s", exc)

    async def _keep_pools(self) -> None:
        """Backstop: refill pools below target every ``pool_check_interval_s``."""
        while True:
            await asyncio.sleep(self.settings.pool_check_interval_s)
            self._slots_freed()

    # -- observation ----------------------------------------------------------------------

    def _view(self, runtime: Runtime) -> RuntimeView:
        assert runtime.owner is not None
        made = runtime.backend_runtime
        return RuntimeView(
            runtime_id=runtime.runtime_id, program_id=runtime.owner, spec=runtime.spec_name,
            backend=self._backend().name, container_id=made.ref,
            exec_path=Paths.RUNTIME_EXEC.format(program_id=runtime.owner,
                                                runtime_id=runtime.runtime_id),
            host=made.host, ports={str(k): v for k, v in made.ports.items()},
            source=runtime.source, created_at=runtime.created_at, acquire_s=runtime.acquire_s,
            disk_bytes=runtime.disk_bytes,
        )

    def snapshot(self) -> dict[str, Any]:
        programs: dict[str, Any] = {}
        for program_id, rids in self._by_program.items():
            held = [self.runtimes[rid] for rid in sorted(rids)]
            programs[program_id] = {
                "runtimes": [self._view(r).model_dump() for r in held],
                "disk_bytes": sum(r.disk_bytes for r in held),
                "ports": sorted(p for r in held for p in r.backend_runtime.ports.values()),
            }
        specs = {e.name: self.spec_view(e).model_dump(exclude={"spec"})
                 for e in self.specs.all()} if self._builder is not None else {}
        pooled = self.pools.all_ready()
        return {
            "backend": self.backend.name if self.backend is not None else "none",
            "programs": programs,
            "specs": specs,
            "totals": {
                "held_runtimes": len(self.runtimes),
                "pool_runtimes": len(pooled),
                "creating_runtimes": self._creating,
                "preparing_programs": len(self._preparing),
                "max_runtimes": self.settings.max_runtimes,
                "runtime_disk_bytes": sum(r.disk_bytes for r in [*self.runtimes.values(),
                                                                   *pooled]),
                "image_disk_bytes": self._builder.image_bytes() if self._builder else 0,
                "disk_budget_bytes": self.settings.disk_budget_bytes,
                "ports": sum(len(r.backend_runtime.ports)
                             for r in [*self.runtimes.values(), *pooled]),
            },
            "reconciled": dict(self.reconciled),
        }

    def register_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics.register(registry, self.snapshot)


__all__ = ["AcquiredHook", "Runtime", "ToolManager"]
