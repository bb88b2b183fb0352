"""Best-effort background work of the service (engine levers, tool-manager hooks, failure
reports): each call runs as its own task under a timeout; a failure is logged and counted in
``thunder_engine_lever_failures_total{lever}``, never raised; ``aclose`` cancels what is left."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from thunder_scheduler.metrics import ServiceMetrics

__all__ = ["BackgroundTasks"]

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self, metrics: ServiceMetrics, timeout_s: float) -> None:
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, lever: str, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background (failures counted under ``lever``)."""

        async def run() -> None:
            try:
                await asyncio.wait_for(work, timeout=self._timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.lever_failures.labels(lever).inc()
                log.warning("engine lever %s failed: %s", lever, exc or type(exc).__name__)

        task = asyncio.get_running_loop().create_task(run(), name=f"lever-{lever}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
