"""Rollout endpoints: an RL framework opens a batch, watches it and cuts what is left of it.

The core's rollout rules (``thunder_scheduling.rollouts``: group-aware placement, stragglers
first, cut-off) work from the programs' ``rollout`` tags alone; these endpoints add what tags
cannot say (``docs/rl-rollout.md``). Paths and bodies are the wire contract's; every endpoint
needs the admin key when one is set:

================================  ===========================================================
``POST /v1/rollouts``             ``RolloutStart`` -> 201 ``RolloutView`` (200 when the batch
                                  was already open: its size / cut-off are updated).
                                  ``RolloutStarted`` in the core.
``GET /v1/rollouts/{rollout}``    ``RolloutView``
``POST /v1/rollouts/{rollout}/cut``  ``RolloutCut`` in the core: every live member is ended
                                  (``cancelled``, held requests failed, in-flight ones aborted);
                                  -> ``RolloutView`` with ``cut_program_ids``
================================  ===========================================================

A batch the scheduler has not seen is 404 with a reason; a bad size or cut-off is 422 naming
the field. A scheduling core without rollout batches (a scripted one) answers 501.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Response

from thunder_core.contract import Paths, RolloutStart, RolloutView
from thunder_scheduler.auth import KeyCheck
from thunder_scheduler.driver import Driver
from thunder_scheduler.errors import ServiceError
from thunder_scheduling.events import RolloutCut, RolloutStarted

__all__ = ["ROLLOUT_PREFIX", "create_rollout_router"]

ROLLOUT_PREFIX = Paths.ROLLOUTS


def _status_of(driver: Driver) -> Callable[[str], Any]:
    status = getattr(driver.core, "rollout", None)
    if status is None:
        raise ServiceError(501, "this scheduling core keeps no rollout batches")
    return status  # type: ignore[no-any-return]


def _view(driver: Driver, rollout: str) -> RolloutView:
    status = _status_of(driver)(rollout)
    if status is None:
        raise ServiceError(404, f"unknown rollout {rollout!r} (open it with POST "
                                f"{Paths.ROLLOUTS} or start a program tagged with it)")
    return RolloutView(
        rollout=status.rollout, num_programs=status.num_programs, num_ended=status.num_ended,
        draining=status.draining, cut_program_ids=list(status.cut_program_ids),
        live_program_ids=list(status.live_program_ids))


def create_rollout_router(get_driver: Callable[[], Driver], require_admin: KeyCheck) -> APIRouter:
    """The rollout API on the driver ``get_driver()`` returns (read per request)."""
    router = APIRouter(dependencies=[Depends(require_admin)], tags=["rollouts"])

    @router.post(Paths.ROLLOUTS, status_code=201, response_model=RolloutView)
    async def start_rollout(body: RolloutStart, response: Response) -> RolloutView:
        driver = get_driver()
        if _status_of(driver)(body.rollout) is not None:
            response.status_code = 200
        driver.feed(RolloutStarted(at=driver.now(), rollout=body.rollout, size=body.size,
                                   cut_fraction=body.cut_fraction))
        return _view(driver, body.rollout)

    @router.get(Paths.ROLLOUT, response_model=RolloutView)
    async def get_rollout(rollout: str) -> RolloutView:
        return _view(get_driver(), rollout)

    @router.post(Paths.ROLLOUT_CUT, response_model=RolloutView)
    async def cut_rollout(rollout: str) -> RolloutView:
        driver = get_driver()
        _view(driver, rollout)  # 404 before the core sees an unknown batch
        driver.feed(RolloutCut(at=driver.now(), rollout=rollout))
        return _view(driver, rollout)

    return router
