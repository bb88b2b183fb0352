"""Operational endpoints: ``GET /health``, ``GET /ready``, ``GET /metrics`` (no auth).

* ``/health``: the process is up and serving (liveness); always 200.
* ``/ready``: at least one backend is healthy with a known, finite capacity (readiness); else
  503 whose ``detail`` gives each backend's reason. A backend's capacity is never assumed: a
  backend that has not answered its probe is not ready.
* ``/metrics``: Prometheus text format from the app's own registry (``metrics.py``); program
  counts by status and phase and backend gauges are refreshed at each scrape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from thunder_core.contract import Paths
from thunder_scheduler.backends.monitor import BackendMonitor
from thunder_scheduler.driver import Driver
from thunder_scheduler.errors import error_response
from thunder_scheduler.metrics import CONTENT_TYPE_LATEST, ServiceMetrics

__all__ = ["backend_report", "create_ops_router"]


def backend_report(monitor: BackendMonitor) -> dict[str, dict[str, Any]]:
    """Per backend: health, capacity, use and the last error, for ``/ready``."""
    report: dict[str, dict[str, Any]] = {}
    for name, state in monitor.states().items():
        info = state.info
        report[name] = {
            "healthy": state.healthy and info is not None,
            "capacity_tokens": info.capacity_tokens if info is not None else None,
            "host_capacity_tokens": info.host_capacity_tokens if info is not None else None,
            "page_size_tokens": info.page_size_tokens if info is not None else None,
            "models": list(info.models) if info is not None else [],
            "used_tokens": state.load.used_tokens if state.load is not None else None,
            "reason": None if state.healthy else (state.last_error or "not probed yet"),
        }
    return report


def create_ops_router(
    get_monitor: Callable[[], BackendMonitor],
    get_driver: Callable[[], Driver],
    metrics: ServiceMetrics,
) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get(Paths.HEALTH)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(Paths.READY)
    async def ready() -> Response:
        report = backend_report(get_monitor())
        if not any(entry["healthy"] for entry in report.values()):
            reasons = {name: entry["reason"] for name, entry in report.items()}
            return error_response(
                503, "no backend is healthy with a known capacity", detail=reasons
            )
        return JSONResponse({"ready": True, "backends": report})

    @router.get(Paths.METRICS)
    async def prometheus() -> Response:
        driver = get_driver()
        metrics.set_programs(
            (view.status.value, view.phase.value) for view in driver.program_views()
        )
        metrics.held.set(driver.held_count())
        for name, state in get_monitor().states().items():
            metrics.set_backend(
                name,
                state.healthy,
                state.info.capacity_tokens if state.info is not None else None,
                state.load.used_tokens if state.load is not None else None,
                state.info.host_capacity_tokens if state.info is not None else None,
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
