"""ImageBuilder: builds spec images ahead of need, at most ``concurrency`` at once, one per spec.

Single flight: the first caller for a spec hash starts the build task; every later caller
awaits the same task (shielded, so one impatient caller's cancellation does not cancel the
build for the others). Outcomes: ``ready`` (an ``ImageInfo``), ``failed`` (the ``BuildFailed``
is kept and re-raised to every caller until the spec is registered again), or back to
``pending`` when the backend was unavailable (the next call retries). ``evict`` removes an
image to reclaim disk; the next need rebuilds it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from thunder_core.runtimes import ImageState
from thunder_scheduler.tools.base import BuildFailed, ImageInfo, RuntimeBackend, ToolError
from thunder_scheduler.tools.specs import SpecEntry


@dataclass
class ImageRecord:
    entry: SpecEntry
    state: ImageState = "pending"
    info: ImageInfo | None = None
    error: ToolError | None = None
    task: asyncio.Task[ImageInfo] | None = None
    last_used_s: float = field(default_factory=time.monotonic)
    builds: int = 0


class ImageBuilder:
    def __init__(self, backend: RuntimeBackend, label_prefix: str, concurrency: int) -> None:
        self._backend = backend
        self._prefix = label_prefix
        self._slots = asyncio.Semaphore(concurrency)
        self.records: dict[str, ImageRecord] = {}

    def record(self, entry: SpecEntry) -> ImageRecord:
        rec = self.records.get(entry.spec_hash)
        if rec is None:
            rec = self.records[entry.spec_hash] = ImageRecord(entry)
        return rec

    def reset_failure(self, entry: SpecEntry) -> None:
        rec = self.record(entry)
        if rec.state == "failed":
            rec.state, rec.error = "pending", None

    def start(self, entry: SpecEntry) -> asyncio.Task[ImageInfo] | None:
        """Start building ``entry``'s image in the background unless it is ready or failed."""
        rec = self.record(entry)
        if rec.state in ("ready", "failed"):
            return None
        if rec.task is None or rec.task.done():
            rec.state = "building"
            rec.task = asyncio.create_task(self._build(rec), name=f"build:{entry.name}")
            rec.task.add_done_callback(_consume)
        return rec.task

    async def get(self, entry: SpecEntry) -> ImageInfo:
        rec = self.record(entry)
        rec.last_used_s = time.monotonic()
        if rec.state == "ready" and rec.info is not None:
            return rec.info
        if rec.state == "failed" and rec.error is not None:
            raise rec.error
        task = self.start(entry)
        assert task is not None
        return await asyncio.shield(task)

    async def _build(self, rec: ImageRecord) -> ImageInfo:
        async with self._slots:
            rec.builds += 1
            try:
                info = await self._backend.build(rec.entry.spec, rec.entry.spec_hash, self._prefix)
            except BuildFailed as exc:
                rec.state, rec.error = "failed", exc
                raise
            except ToolError:
                rec.state = "pending"
                raise
            except Exception as exc:
                rec.state = "failed"
                rec.error = BuildFailed(f"building spec {rec.entry.name!r} failed: {exc!r}")
                raise rec.error from exc
            rec.state, rec.info, rec.error = "ready", info, None
            return info

    async def evict(self, spec_hash: str) -> int:
        """Remove the image of ``spec_hash`` if it is ready; return the bytes freed."""
        rec = self.records.get(spec_hash)
        if rec is None or rec.state != "ready" or rec.info is None:
            return 0
        info = rec.info
        rec.state, rec.info = "evicted", None
        await self._backend.remove_image(info)
        return info.size_bytes if info.built_by_us else 0

    def image_bytes(self) -> int:
        return sum(
            rec.info.size_bytes for rec in self.records.values()
            if rec.info is not None and rec.info.built_by_us
        )

    async def close(self) -> None:
        tasks = [rec.task for rec in self.records.values() if rec.task and not rec.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _consume(task: asyncio.Task[ImageInfo]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here; callers get it from their own await


__all__ = ["ImageBuilder", "ImageRecord"]
