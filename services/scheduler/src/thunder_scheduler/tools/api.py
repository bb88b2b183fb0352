"""HTTP API of the tool manager: ``create_tools_router(get_manager, require_admin)``.

Paths are ``thunder_core.contract.Paths``; bodies are the models of ``thunder_core.runtimes``.
Every error body is ``thunder_core.contract.ErrorBody`` (``{"error": {"message"}}``): 404 unknown
spec / program / runtime, 409 conflict (program ended, failed build or setup), 503 backend down
or budget exhausted, 504 exec timeout, 422 invalid body. Registering a spec needs the admin
dependency; the service (``app.create_app``) puts every route here behind the admin key, since
exec runs commands in sandboxes (the runtime clients send the admin key with every call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from thunder_core.contract import Paths, error_body
from thunder_core.runtimes import (
    AcquireRuntime,
    ExecRequest,
    ExecResult,
    RuntimeList,
    RuntimeSpec,
    RuntimeSpecList,
    RuntimeSpecView,
    RuntimeView,
)
from thunder_scheduler.tools.base import ToolError
from thunder_scheduler.tools.manager import ToolManager

M = TypeVar("M", bound=BaseModel)


def error_response(exc: ToolError) -> JSONResponse:
    body = error_body(exc.status_code, exc.message, detail=exc.detail)
    return JSONResponse(body, status_code=exc.status_code)


def _invalid(exc: ValidationError) -> JSONResponse:
    detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return JSONResponse(error_body(422, "invalid request body", detail=detail), status_code=422)


async def _body(request: Request, model: type[M]) -> M | JSONResponse:
    try:
        raw = await request.json()
    except ValueError:
        return JSONResponse(error_body(400, "body is not JSON"), status_code=400)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        return _invalid(exc)


def create_tools_router(
    get_manager: Callable[[], ToolManager], require_admin: Callable[..., Any]
) -> APIRouter:
    router = APIRouter(tags=["tools"])

    async def guarded(call: Callable[[ToolManager], Any]) -> Any:
        manager = get_manager()
        try:
            return await call(manager)
        except ToolError as exc:
            manager.metrics.errors.labels(type(exc).__name__).inc()
            return error_response(exc)

    @router.post(Paths.RUNTIME_SPECS, dependencies=[Depends(require_admin)],
                 response_model=RuntimeSpecView, status_code=201)
    async def register_spec(request: Request) -> Any:
        spec = await _body(request, RuntimeSpec)
        if isinstance(spec, JSONResponse):
            return spec

        async def call(manager: ToolManager) -> RuntimeSpecView:
            return manager.register_spec(spec)

        return await guarded(call)

    @router.get(Paths.RUNTIME_SPECS, response_model=RuntimeSpecList)
    async def list_specs() -> Any:
        async def call(manager: ToolManager) -> RuntimeSpecList:
            return RuntimeSpecList(specs=[manager.spec_view(e) for e in manager.specs.all()])

        return await guarded(call)

    @router.get(Paths.RUNTIME_SPECS + "/{name}", response_model=RuntimeSpecView)
    async def get_spec(name: str) -> Any:
        async def call(manager: ToolManager) -> RuntimeSpecView:
            return manager.spec_view(manager.specs.get(name))

        return await guarded(call)

    @router.post(Paths.RUNTIMES, response_model=RuntimeView, status_code=201)
    async def acquire(program_id: str, request: Request) -> Any:
        body = await _body(request, AcquireRuntime)
        if isinstance(body, JSONResponse):
            return body

        async def call(manager: ToolManager) -> RuntimeView:
            return await manager.acquire(program_id, body.spec)

        return await guarded(call)

    @router.get(Paths.RUNTIMES, response_model=RuntimeList)
    async def list_runtimes(program_id: str) -> Any:
        async def call(manager: ToolManager) -> RuntimeList:
            return RuntimeList(runtimes=manager.list_runtimes(program_id))

        return await guarded(call)

    @router.post(Paths.RUNTIME_EXEC, response_model=ExecResult)
    async def exec_command(program_id: str, runtime_id: str, request: Request) -> Any:
        body = await _body(request, ExecRequest)
        if isinstance(body, JSONResponse):
            return body

        async def call(manager: ToolManager) -> ExecResult:
            return await manager.exec(program_id, runtime_id, body)

        return await guarded(call)

    @router.delete(Paths.RUNTIME, status_code=204, response_model=None)
    async def release(program_id: str, runtime_id: str) -> Any:
        async def call(manager: ToolManager) -> None:
            await manager.release(program_id, runtime_id)

        result = await guarded(call)
        return result if isinstance(result, JSONResponse) else Response(status_code=204)

    return router


__all__ = ["create_tools_router", "error_response"]
