"""Sync and async clients for the scheduler's lifecycle API.

Both raise ``ThunderAPIError`` (with the service's status and reason) for 4xx/5xx answers and
``ThunderUnavailable`` when the service cannot be reached in time. Adapters that must never block
an agent use ``LifecycleEmitter`` (``thunder_core.emitter``) on top of the sync client.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Self

import httpx

from thunder_core.context import SCHEDULER_URL_ENV, register_scheduler
from thunder_core.contract import (
    CONTRACT_VERSION,
    CONTRACT_VERSION_HEADER,
    CacheHint,
    CacheHints,
    Paths,
    ProgramEnd,
    ProgramEndStatus,
    ProgramList,
    ProgramStart,
    ProgramView,
    RolloutStart,
    RolloutView,
    ThunderAgentRelease,
    ToolEnd,
    ToolEndStatus,
    ToolStart,
)

ADMIN_KEY_ENV = "THUNDER_ADMIN_KEY"
DEFAULT_TIMEOUT_S = 2.0


class ThunderError(Exception):
    """Base class of the client's errors."""


class ThunderUnavailable(ThunderError):
    """The scheduler could not be reached (connection refused, timeout)."""


class ThunderAPIError(ThunderError):
    """The scheduler answered with an error status."""

    def __init__(self, status_code: int, reason: str, detail: Any = None) -> None:
        super().__init__(f"{status_code}: {reason}")
        self.status_code = status_code
        self.reason = reason
        self.detail = detail


def scheduler_url_from_env() -> str | None:
    """``THUNDER_SCHEDULER_URL`` with any trailing ``/v1`` and slash removed, or None."""
    url = os.environ.get(SCHEDULER_URL_ENV)
    return normalise_base_url(url) if url else None


def normalise_base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(admin_key: str | None) -> dict[str, str]:
    headers = {CONTRACT_VERSION_HEADER: CONTRACT_VERSION}
    if admin_key:
        headers["Authorization"] = f"Bearer {admin_key}"
    return headers


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    reason = response.reason_phrase or "error"
    detail: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        error = body.get("error", reason)
        if isinstance(error, dict):  # {"error": {"message", "type", "code", ...}}
            reason = str(error.get("message", reason))
            detail = error.get("detail")
        else:
            reason = str(error)
            detail = body.get("detail")
    elif body:
        reason = str(body)[:500]
    raise ThunderAPIError(response.status_code, reason, detail)


class _Requests:
    """Request building shared by the sync and async clients (one place for paths and bodies)."""

    @staticmethod
    def start(
        program_id: str | None, framework: str, priority: int, tags: dict[str, str] | None,
        parent_program_id: str | None, lease_s: float | None,
    ) -> tuple[str, dict[str, Any]]:
        event = ProgramStart(
            program_id=program_id, framework=framework, priority=priority, tags=tags or {},
            parent_program_id=parent_program_id, lease_s=lease_s,
        )
        return Paths.PROGRAMS, event.model_dump(exclude_none=True)

    @staticmethod
    def tool_start(
        program_id: str, call_id: str, tool_name: str, runtime_ids: list[str] | None,
        expected_duration_s: float | None,
    ) -> tuple[str, dict[str, Any]]:
        event = ToolStart(
            call_id=call_id, tool_name=tool_name, runtime_ids=runtime_ids or [],
            expected_duration_s=expected_duration_s,
        )
        return Paths.TOOLS.format(program_id=program_id), event.model_dump(exclude_none=True)

    @staticmethod
    def tool_end(
        program_id: str, call_id: str, status: ToolEndStatus | str, error: str | None
    ) -> tuple[str, dict[str, Any]]:
        event = ToolEnd(status=ToolEndStatus(status), error=error)
        path = Paths.TOOL_END.format(program_id=program_id, call_id=call_id)
        return path, event.model_dump(mode="json", exclude_none=True)

    @staticmethod
    def end(
        program_id: str, status: ProgramEndStatus | str, reason: str | None
    ) -> tuple[str, dict[str, Any]]:
        event = ProgramEnd(status=ProgramEndStatus(status), reason=reason)
        path = Paths.PROGRAM_END.format(program_id=program_id)
        return path, event.model_dump(mode="json", exclude_none=True)

    @staticmethod
    def hints(program_id: str, hints: list[CacheHint]) -> tuple[str, dict[str, Any]]:
        event = CacheHints(hints=hints)
        return Paths.HINTS.format(program_id=program_id), event.model_dump(
            mode="json", exclude_none=True)


class ThunderClient:
    """Blocking client for the lifecycle API. Every call has a timeout (default 2 s)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        admin_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = base_url or scheduler_url_from_env()
        if not url:
            raise ValueError(f"no scheduler URL: pass base_url or set {SCHEDULER_URL_ENV}")
        self.base_url = normalise_base_url(url)
        register_scheduler(self.base_url)  # the httpx hook tags requests to it, and only to it
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            headers=_headers(admin_key or os.environ.get(ADMIN_KEY_ENV)),
            transport=transport,
        )

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json() if response.content else None

    def _get(self, path: str) -> Any:
        try:
            response = self._http.get(path)
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json()

    def start_program(
        self, program_id: str | None = None, *, framework: str = "other", priority: int = 0,
        tags: dict[str, str] | None = None, parent_program_id: str | None = None,
        lease_s: float | None = None,
    ) -> ProgramView:
        path, body = _Requests.start(
            program_id, framework, priority, tags, parent_program_id, lease_s
        )
        return ProgramView.model_validate(self._post(path, body))

    def start_tool(
        self, program_id: str, call_id: str, tool_name: str, *,
        runtime_ids: list[str] | None = None, expected_duration_s: float | None = None,
    ) -> None:
        self._post(*_Requests.tool_start(
            program_id, call_id, tool_name, runtime_ids, expected_duration_s
        ))

    def end_tool(
        self, program_id: str, call_id: str, *, status: ToolEndStatus | str = ToolEndStatus.OK,
        error: str | None = None,
    ) -> None:
        self._post(*_Requests.tool_end(program_id, call_id, status, error))

    def end_program(
        self, program_id: str, *, status: ProgramEndStatus | str = ProgramEndStatus.OK,
        reason: str | None = None,
    ) -> ProgramView:
        return ProgramView.model_validate(self._post(*_Requests.end(program_id, status, reason)))

    def send_hints(self, program_id: str, *hints: CacheHint) -> None:
        """Cache hints about a program (``CacheHints``), applied in order."""
        self._post(*_Requests.hints(program_id, list(hints)))

    def release(self, program_id: str) -> None:
        """ThunderAgent's ``/programs/release``: end a program the ThunderAgent way."""
        body = ThunderAgentRelease(program_id=program_id).model_dump()
        self._post(Paths.THUNDERAGENT_RELEASE, body)

    def get_program(self, program_id: str) -> ProgramView:
        return ProgramView.model_validate(self._get(Paths.PROGRAM.format(program_id=program_id)))

    def open_rollout(self, rollout: str, *, size: int | None = None,
                     cut_fraction: float | None = None) -> RolloutView:
        """Open an RL rollout batch (``POST /v1/rollouts``): ``size`` programs tagged with
        it are coming; with ``cut_fraction`` the rest is cut once that fraction ended."""
        body = RolloutStart(rollout=rollout, size=size, cut_fraction=cut_fraction)
        return RolloutView.model_validate(
            self._post(Paths.ROLLOUTS, body.model_dump(exclude_none=True)))

    def get_rollout(self, rollout: str) -> RolloutView:
        return RolloutView.model_validate(self._get(Paths.ROLLOUT.format(rollout=rollout)))

    def cut_rollout(self, rollout: str) -> RolloutView:
        """End every live program of the batch now (``cancelled``); the view names them."""
        return RolloutView.model_validate(
            self._post(Paths.ROLLOUT_CUT.format(rollout=rollout), {}))

    def list_programs(self) -> list[ProgramView]:
        return ProgramList.model_validate(self._get(Paths.PROGRAMS)).programs

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout_s: float | None = None) -> Any:
        """Any other call on the service (tool manager, admin). Errors as for the rest."""
        try:
            response = self._http.request(
                method, path, json=body,
                timeout=timeout_s if timeout_s is not None else self._http.timeout,
            )
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json() if response.content else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncThunderClient:
    """Asyncio client for the lifecycle API, same methods as ``ThunderClient``."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        admin_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = base_url or scheduler_url_from_env()
        if not url:
            raise ValueError(f"no scheduler URL: pass base_url or set {SCHEDULER_URL_ENV}")
        self.base_url = normalise_base_url(url)
        register_scheduler(self.base_url)  # the httpx hook tags requests to it, and only to it
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            headers=_headers(admin_key or os.environ.get(ADMIN_KEY_ENV)),
            transport=transport,
        )

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json() if response.content else None

    async def _get(self, path: str) -> Any:
        try:
            response = await self._http.get(path)
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json()

    async def start_program(
        self, program_id: str | None = None, *, framework: str = "other", priority: int = 0,
        tags: dict[str, str] | None = None, parent_program_id: str | None = None,
        lease_s: float | None = None,
    ) -> ProgramView:
        path, body = _Requests.start(
            program_id, framework, priority, tags, parent_program_id, lease_s
        )
        return ProgramView.model_validate(await self._post(path, body))

    async def start_tool(
        self, program_id: str, call_id: str, tool_name: str, *,
        runtime_ids: list[str] | None = None, expected_duration_s: float | None = None,
    ) -> None:
        await self._post(*_Requests.tool_start(
            program_id, call_id, tool_name, runtime_ids, expected_duration_s
        ))

    async def end_tool(
        self, program_id: str, call_id: str, *, status: ToolEndStatus | str = ToolEndStatus.OK,
        error: str | None = None,
    ) -> None:
        await self._post(*_Requests.tool_end(program_id, call_id, status, error))

    async def end_program(
        self, program_id: str, *, status: ProgramEndStatus | str = ProgramEndStatus.OK,
        reason: str | None = None,
    ) -> ProgramView:
        return ProgramView.model_validate(
            await self._post(*_Requests.end(program_id, status, reason))
        )

    async def send_hints(self, program_id: str, *hints: CacheHint) -> None:
        await self._post(*_Requests.hints(program_id, list(hints)))

    async def release(self, program_id: str) -> None:
        body = ThunderAgentRelease(program_id=program_id).model_dump()
        await self._post(Paths.THUNDERAGENT_RELEASE, body)

    async def get_program(self, program_id: str) -> ProgramView:
        return ProgramView.model_validate(
            await self._get(Paths.PROGRAM.format(program_id=program_id))
        )

    async def list_programs(self) -> list[ProgramView]:
        return ProgramList.model_validate(await self._get(Paths.PROGRAMS)).programs

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      timeout_s: float | None = None) -> Any:
        try:
            response = await self._http.request(
                method, path, json=body,
                timeout=timeout_s if timeout_s is not None else self._http.timeout,
            )
        except httpx.TransportError as exc:
            raise ThunderUnavailable(f"{self.base_url}{path}: {exc!r}") from exc
        _raise_for(response)
        return response.json() if response.content else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = [
    "ADMIN_KEY_ENV",
    "DEFAULT_TIMEOUT_S",
    "SCHEDULER_URL_ENV",
    "AsyncThunderClient",
    "ThunderAPIError",
    "ThunderClient",
    "ThunderError",
    "ThunderUnavailable",
    "normalise_base_url",
    "scheduler_url_from_env",
]
