"""Exception handlers: every error the service itself produces is a JSON ``ErrorBody``,
OpenAI's shape ``{"error": {"message", "type", "code", "param"}}`` (``contract.error_body``).

Client errors (4xx) are answered with a reason and logged at most as one line, never with a
traceback; only unexpected server errors (500) are logged with their traceback. Malformed JSON
is 400, a body that parses but has missing or wrong-typed fields is 422 (FastAPI's convention),
both with the offending location in ``detail``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from thunder_core.contract import error_body
from thunder_scheduler.gate import GateError

__all__ = ["ServiceError", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Raised by endpoints for a client-visible error (status, reason, optional detail)."""

    def __init__(
        self, status: int, reason: str, detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, reason: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(error_body(status, reason, detail=detail), status_code=status,
                        headers=headers)


def _validation_detail(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    malformed = False
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            malformed = True
        errors.append({
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        })
    if malformed:
        return 400, "malformed JSON body", errors
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part != "body") or "body"
    return 422, f"invalid request: {where}: {first['msg']}", errors


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    status, reason, detail = _validation_detail(exc)
    log.info("%s %s -> %d %s", request.method, request.url.path, status, reason)
    return error_response(status, reason, detail)


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.reason)
    return error_response(exc.status, exc.reason, exc.detail, headers=exc.headers)


async def _on_gate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GateError)
    log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.reason)
    return error_response(exc.status, exc.reason)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    reason = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and reason == "Not Found":
        reason = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        reason = f"method {request.method} not allowed on {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, reason, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(GateError, _on_gate_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
