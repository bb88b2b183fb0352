"""Lifecycle endpoints: programs start, run tools and end; observers list them.

Paths and bodies are the wire contract's (``thunder_core.contract.Paths`` and the event
models); every endpoint needs the admin key when one is set (``auth.py``):

==========================================  =====================================================
``POST /v1/programs``                       ``ProgramStart`` -> 201 ``ProgramView``; 409 if the
                                            id is live. Without an id the service assigns one.
``POST /v1/programs/{id}/tools``            ``ToolStart`` -> ``ProgramView`` (phase acting)
``POST /v1/programs/{id}/tools/{call}/end`` ``ToolEnd`` -> ``ProgramView``
``POST /v1/programs/{id}/end``              ``ProgramEnd`` -> ``ProgramView`` (terminated)
``POST /v1/programs/{id}/hints``            ``CacheHints`` -> ``ProgramView``; 400 with a reason
``GET /v1/programs[?status=...]``           ``ProgramList`` (live and recently ended programs)
``GET /v1/programs/{id}``                   ``ProgramView``
``POST /programs/release``                  ThunderAgent's release: ends the program
==========================================  =====================================================

An unknown program is 404 with a JSON reason; so is an unknown tool call id. Bodies are
limited to ``max_body_bytes`` (413) by :class:`BodyLimitMiddleware`, applied to these paths only
(the proxy enforces the limit on its own routes without buffering).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thunder_core.contract import (
    CacheHints,
    HintKind,
    Paths,
    ProgramEnd,
    ProgramEndStatus,
    ProgramList,
    ProgramStart,
    ProgramStatus,
    ProgramView,
    ThunderAgentRelease,
    ToolEnd,
    ToolEndStatus,
    ToolStart,
)
from thunder_scheduler.auth import KeyCheck
from thunder_scheduler.driver import Driver
from thunder_scheduler.errors import ServiceError, error_response
from thunder_scheduler.json_limits import depth_error, exceeds_depth
from thunder_scheduler.quota import ProgramQuota, client_identity
from thunder_scheduling.events import (
    CacheHintReceived,
    ProgramEnded,
    ProgramStarted,
    ToolFinished,
    ToolStarted,
)

__all__ = ["LIFECYCLE_PREFIXES", "BodyLimitMiddleware", "create_lifecycle_router"]

LIFECYCLE_PREFIXES = (
    Paths.PROGRAMS,
    Paths.THUNDERAGENT_RELEASE.rsplit("/", 1)[0] + "/",  # ThunderAgent's /programs/...
    Paths.RUNTIME_SPECS,
    Paths.ROLLOUTS,   # rollout_api.py: the same key and body limit
    "/admin",
)


def _unknown(program_id: str) -> ServiceError:
    return ServiceError(404, f"unknown program {program_id!r}")


def create_lifecycle_router(
    get_driver: Callable[[], Driver],
    require_admin: KeyCheck,
    *,
    on_program_started: Callable[[str, ProgramStart], None] | None = None,
    quota: ProgramQuota | None = None,
    max_lease_s: float = float("inf"),
    max_tags_bytes: int | None = None,
) -> APIRouter:
    """The lifecycle API on the driver ``get_driver()`` returns (read per request)."""
    router = APIRouter(dependencies=[Depends(require_admin)], tags=["lifecycle"])

    def view_or_404(driver: Driver, program_id: str) -> ProgramView:
        view = driver.program_view(program_id)
        if view is None:
            raise _unknown(program_id)
        return view

    def require_live(driver: Driver, program_id: str) -> None:
        if not driver.core.has_program(program_id):
            raise _unknown(program_id)

    @router.post(Paths.PROGRAMS, status_code=201, response_model=ProgramView)
    async def start_program(
        body: ProgramStart, response: Response, request: Request
    ) -> ProgramView:
        """Start a program (201), or adopt one that already runs (200).

        Adapters send lifecycle events off the agent's hot path, so a program's first LLM
        request often reaches the proxy (and starts the program implicitly) before its start
        event does. Starting a live program therefore updates its metadata (framework,
        priority, tags, parent, lease) and answers 200 instead of refusing it.
        """
        driver = get_driver()
        if body.lease_s is not None and not body.lease_s <= max_lease_s:
            raise ServiceError(422, f"invalid request: lease_s: must be at most {max_lease_s:g} "
                                    f"s (setting max_lease_s), got {body.lease_s:g}")
        if max_tags_bytes is not None:
            size = len(orjson.dumps(body.tags))
            if size > max_tags_bytes:
                raise ServiceError(413, f"tags of {size} bytes as JSON exceed the limit of "
                                        f"{max_tags_bytes} bytes (setting max_tags_bytes)")
        program_id = body.program_id or f"prog-{uuid.uuid4().hex}"
        if driver.core.has_program(program_id):
            response.status_code = 200
        elif quota is not None:
            client = request.client
            refusal = quota.admit(program_id, client_identity(
                request.scope["headers"], (client.host, client.port) if client else None))
            if refusal is not None:
                raise ServiceError(429, refusal)
        driver.feed(ProgramStarted(
            at=driver.now(),
            program_id=program_id,
            priority=body.priority,
            framework=body.framework,
            tags=dict(body.tags),
            parent_program_id=body.parent_program_id,
            lease_s=body.lease_s,
        ))
        if on_program_started is not None:
            on_program_started(program_id, body)
        return view_or_404(driver, program_id)

    @router.get(Paths.PROGRAMS, response_model=ProgramList)
    async def list_programs(
        status: Annotated[
            ProgramStatus | None, Query(description="only programs with this status")
        ] = None,
    ) -> ProgramList:
        views = get_driver().program_views()
        if status is not None:
            views = [view for view in views if view.status == status]
        return ProgramList(programs=views)

    @router.get(Paths.PROGRAM, response_model=ProgramView)
    async def get_program(program_id: str) -> ProgramView:
        return view_or_404(get_driver(), program_id)

    @router.post(Paths.TOOLS, response_model=ProgramView)
    async def start_tool(program_id: str, body: ToolStart) -> ProgramView:
        driver = get_driver()
        require_live(driver, program_id)
        if driver.has_tool_call(program_id, body.call_id):
            raise ServiceError(409, f"tool call {body.call_id!r} of {program_id!r} already runs")
        driver.feed(ToolStarted(
            at=driver.now(),
            program_id=program_id,
            call_id=body.call_id,
            tool_name=body.tool_name,
            runtime_ids=tuple(body.runtime_ids),
            expected_duration_s=body.expected_duration_s,
        ))
        return view_or_404(driver, program_id)

    @router.post(Paths.TOOL_END, response_model=ProgramView)
    async def end_tool(program_id: str, call_id: str, body: ToolEnd) -> ProgramView:
        driver = get_driver()
        require_live(driver, program_id)
        if not driver.has_tool_call(program_id, call_id):
            raise ServiceError(404, f"program {program_id!r} has no running tool call {call_id!r}")
        driver.feed(ToolFinished(
            at=driver.now(),
            program_id=program_id,
            call_id=call_id,
            ok=body.status == ToolEndStatus.OK,
        ))
        return view_or_404(driver, program_id)

    @router.post(Paths.HINTS, response_model=ProgramView)
    async def hint_program(program_id: str, request: Request) -> ProgramView:
        """Cache hints (``CacheHints``): 400 with the reason when a hint is malformed.
        ``conversation_ended`` ends the program (the end path); the others reach the core as
        ``CacheHintReceived`` and the driver's engine levers (``Driver.hinted``)."""
        driver = get_driver()
        require_live(driver, program_id)
        try:
            body = CacheHints.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise ServiceError(400, f"invalid hints: {where}: {first['msg']}") from None
        for hint in body.hints:
            if hint.kind is HintKind.CONVERSATION_ENDED:
                ended: ProgramView = end(driver, program_id, ProgramEndStatus.OK,
                                         hint.reason or "conversation ended (hint)")
                return ended
            driver.feed(CacheHintReceived(
                at=driver.now(), program_id=program_id, kind=hint.kind.value,
                seconds=hint.seconds, prefix_id=hint.prefix_id, prefix_tokens=hint.prefix_tokens,
            ))
            driver.hinted(program_id, hint.kind.value, hint.prefix_id)
        return view_or_404(driver, program_id)

    def end(driver: Driver, program_id: str, status: ProgramEndStatus, reason: str | None) -> Any:
        require_live(driver, program_id)
        driver.feed(ProgramEnded(
            at=driver.now(), program_id=program_id, status=status, reason=reason
        ))
        return view_or_404(driver, program_id)

    @router.post(Paths.PROGRAM_END, response_model=ProgramView)
    async def end_program(program_id: str, body: ProgramEnd) -> ProgramView:
        driver = get_driver()
        view: ProgramView = end(driver, program_id, body.status, body.reason)
        return view

    @router.post(Paths.THUNDERAGENT_RELEASE, response_model=ProgramView)
    async def release_program(body: ThunderAgentRelease) -> ProgramView:
        driver = get_driver()
        view: ProgramView = end(
            driver, body.program_id, ProgramEndStatus.OK, "released via /programs/release"
        )
        return view

    return router


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes`` on the lifecycle paths (pure ASGI).

    Other paths pass through untouched (one prefix check), so the proxy's hot path pays nothing.
    The body is read up front (lifecycle bodies are small) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIFECYCLE_PREFIXES):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._too_large(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if exceeds_depth(body):
            await error_response(400, depth_error())(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"request body over the limit of {self.max_bytes} bytes (max_body_bytes)"
        )
        await response(scope, receive, send)
