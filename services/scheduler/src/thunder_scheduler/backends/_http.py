"""Control-plane HTTP helpers shared by the backends.

Every call goes through the injected ``httpx.AsyncClient`` with a per-call timeout
and turns transport failures, non-2xx answers and unparseable bodies into
:class:`~thunder_scheduler.backends.base.BackendUnavailable` naming the backend, the
URL and the cause, so callers never see a raw ``httpx`` exception.
"""

from __future__ import annotations

from typing import Any

import httpx

from thunder_scheduler.backends.base import BackendUnavailable

DEFAULT_CONTROL_TIMEOUT_S = 5.0
"""Control-plane calls (probe, load, abort, slots) are small; 5 s spans a busy engine's
event loop stall without hanging the monitor (our choice, not an engine constant).
Slot save/restore of a long context is disk I/O: those calls pass a longer timeout."""

_BODY_EXCERPT_CHARS = 300


class EngineHTTPError(BackendUnavailable):
    """The engine answered, but with a non-2xx status; ``status_code`` and ``body`` kept."""

    def __init__(self, backend: str, reason: str, status_code: int, body: str) -> None:
        super().__init__(backend, reason)
        self.status_code = status_code
        self.body = body


async def send(
    http: httpx.AsyncClient,
    backend: str,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    params: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_CONTROL_TIMEOUT_S,
) -> httpx.Response:
    """Send one request; raise ``BackendUnavailable`` (``EngineHTTPError`` for non-2xx)."""
    try:
        response = await http.request(method, url, json=json_body, params=params, timeout=timeout_s)
    except httpx.TimeoutException as exc:
        raise BackendUnavailable(
            backend, f"{method} {url} timed out after {timeout_s:g} s ({type(exc).__name__})"
        ) from exc
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            backend, f"{method} {url} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if response.status_code >= 300:
        body = response.text[:_BODY_EXCERPT_CHARS]
        raise EngineHTTPError(
            backend,
            f"{method} {url} answered HTTP {response.status_code}: {body}",
            response.status_code,
            body,
        )
    return response


async def get_json(
    http: httpx.AsyncClient,
    backend: str,
    url: str,
    *,
    params: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_CONTROL_TIMEOUT_S,
) -> Any:
    """GET ``url`` and decode JSON; raise ``BackendUnavailable`` on any failure."""
    response = await send(http, backend, "GET", url, params=params, timeout_s=timeout_s)
    return decode_json(backend, url, response)


def decode_json(backend: str, url: str, response: httpx.Response) -> Any:
    """Decode a response body as JSON or raise ``BackendUnavailable`` quoting it."""
    try:
        return response.json()
    except ValueError as exc:
        raise BackendUnavailable(
            backend, f"{url} did not return JSON: {response.text[:_BODY_EXCERPT_CHARS]!r}"
        ) from exc


def as_mapping(backend: str, what: str, value: Any) -> dict[str, Any]:
    """Check that a decoded JSON value is an object."""
    if not isinstance(value, dict):
        raise BackendUnavailable(backend, f"{what} is not a JSON object: {value!r:.200}")
    return value


def positive_int(backend: str, what: str, value: Any) -> int:
    """A strictly positive integer from an engine answer (ints, or strings of digits)."""
    if isinstance(value, bool):
        raise BackendUnavailable(backend, f"{what} is not a number: {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise BackendUnavailable(backend, f"{what} is not a number: {value!r}") from exc
    if number <= 0:
        raise BackendUnavailable(backend, f"{what} must be positive, got {number}")
    return number
