"""The live page: ``GET /live`` draws programs as a timeline per replica, ``GET /live/state``
feeds it.

* ``/live`` (no key) is one static HTML file (``page.html``, no external assets: it works on an
  air-gapped cluster). It polls ``/live/state`` every second and draws, per replica, one lane
  per program whose segments are its phase over time: reasoning (an LLM request), acting (a
  tool call), paused (KV released, waiting to be restored), ended. The history is what the page
  has seen since it opened; the server keeps none.
* ``/live/state`` (admin key, like ``/v1/programs``: it lists program ids) answers
  ``{"now_s", "backends": [{name, healthy, used_tokens, capacity_tokens}], "programs": [...]}``
  with each program's id, status, phase, backend, framework, current tool and pause count.
  When the service has an admin key the page asks for it once and keeps it in the tab's
  ``sessionStorage``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import HTMLResponse, JSONResponse

from thunder_core.contract import Paths
from thunder_scheduler.auth import KeyCheck
from thunder_scheduler.backends.monitor import BackendMonitor
from thunder_scheduler.driver import Driver

__all__ = ["create_live_router", "live_state"]

PROGRAM_FIELDS = (
    "program_id", "status", "phase", "backend", "framework", "current_tool", "pause_count",
    "context_tokens",
)
"""What the page needs of each program (a subset of ``ProgramView``)."""


def live_state(driver: Driver, monitor: BackendMonitor) -> dict[str, Any]:
    """The page's data: backends with their KV use, and every program the core shows."""
    backends = []
    for name, state in sorted(monitor.states().items()):
        info = state.info
        backends.append({
            "name": name,
            "healthy": bool(state.healthy and info is not None),
            "used_tokens": state.load.used_tokens if state.load is not None else None,
            "capacity_tokens": info.capacity_tokens if info is not None else None,
        })
    programs = [
        view.model_dump(mode="json", include=set(PROGRAM_FIELDS))
        for view in driver.program_views()
    ]
    return {"now_s": time.time(), "backends": backends, "programs": programs}


def create_live_router(
    get_driver: Callable[[], Driver],
    get_monitor: Callable[[], BackendMonitor],
    require_admin: KeyCheck,
) -> APIRouter:
    router = APIRouter(tags=["live"])
    page = files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @router.get(Paths.LIVE_PAGE, include_in_schema=False)
    async def live_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get(Paths.LIVE_STATE, dependencies=[Depends(require_admin)])
    async def state() -> JSONResponse:
        return JSONResponse(live_state(get_driver(), get_monitor()))

    return router
