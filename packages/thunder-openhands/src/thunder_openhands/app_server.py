"""The openhands-ai app server's sandbox service, backed by the scheduler's tool manager.

openhands-ai (the app server, ``openhands serve``) asks a ``SandboxService`` for the sandbox a
conversation's agent server runs in. ``OH_SANDBOX_KIND=thunder_openhands.app_server.
ThunderSandboxServiceInjector`` makes it ours: each sandbox is one scheduler program holding one
tool-manager runtime, taken from the warm pool instead of a cold ``docker run``.

Interface, read from the openhands-ai 1.11.0 wheel (it cannot be installed beside our
openhands-sdk 1.58: it pins ``openhands-sdk==1.34.0``), so this module duck-types it and never
imports openhands-ai at module import time:

* ``openhands/app_server/sandbox/sandbox_service.py``: ``SandboxService`` (abstract methods
  ``search_sandboxes``, ``get_sandbox``, ``get_sandbox_by_session_api_key``,
  ``get_sandbox_record_by_session_api_key``, ``start_sandbox``, ``resume_sandbox``,
  ``pause_sandbox``, ``delete_sandbox``; ``batch_get_sandboxes`` has a default) and
  ``SandboxServiceInjector`` (``DiscriminatedUnionMixin`` + ``Injector[SandboxService]``);
* ``openhands/app_server/sandbox/sandbox_models.py``: ``SandboxStatus``, ``ExposedUrl``,
  ``SandboxRecord``, ``SandboxInfo``, ``SandboxPage``, ``AGENT_SERVER`` (mirrored below);
* ``openhands/app_server/services/injector.py``: ``Injector.inject(state, request)`` is an
  async generator yielding the service;
* ``openhands/agent_server/env_parser.py`` (openhands-agent-server 1.34.0):
  ``DiscriminatedUnionEnvParser._import_and_register_class`` imports a dotted ``*_KIND`` and
  the config model then validates it as a ``SandboxServiceInjector`` subclass. So the injector
  must really subclass openhands-ai's class: it is built on first access of
  ``ThunderSandboxServiceInjector`` (module ``__getattr__``), which imports openhands-ai then and
  raises ``ImportError`` naming it when it is missing.

Mapping (sandbox id = program id):

* ``start_sandbox`` -> ``POST /v1/programs`` (framework ``openhands``, tags below) then
  ``POST /v1/programs/{id}/runtimes`` for the Thunder runtime spec (``sandbox_spec_id`` when
  given, else ``THUNDER_OH_RUNTIME_SPEC``); a failed acquire ends the program again; an id
  that is a live program already is refused (the scheduler answers a repeated start with 200);
* ``get_sandbox`` / ``search_sandboxes`` -> ``GET /v1/programs?status=active`` filtered by the
  tag ``oh_sandbox_service`` (and ``oh_user`` for a user-scoped service), then
  ``GET /v1/programs/{id}/runtimes``; ``RUNNING`` when the runtime is held, ``MISSING`` when
  the program is live but holds none (the tool manager reaped it); terminated -> not found;
* ``delete_sandbox`` -> ``DELETE`` the runtime, then program end (``ok``); ``False`` for an
  unknown id;
* ``pause_sandbox``: the tool manager cannot freeze a runtime, so a known sandbox raises
  ``NotImplementedError`` saying so (an unknown one is ``False``, the interface's not-found);
  ``resume_sandbox`` of a known sandbox is ``True`` (never paused, so already running);
* ``exposed_urls``: ``AGENT_SERVER`` at ``http://<runtime host>:<host port of
  THUNDER_OH_AGENT_SERVER_PORT>`` when the spec publishes that port (agent server default 8000;
  ``port`` is the container port, as openhands-ai's Docker service reports it);
* ``created_at``: the wall-clock start kept in the program's tag ``oh_created_at``;
* ``session_api_key``: the spec's ``OH_SESSION_API_KEYS_0`` environment value. Runtimes come
  from a shared pool, so the key is per spec, not per sandbox: a lookup by key answers only
  when exactly one of this service's sandboxes matches.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

from pydantic import BaseModel, Field

from thunder_core.client import AsyncThunderClient, ThunderAPIError, ThunderError
from thunder_core.contract import (
    RUNTIME_SPEC_TAG,
    Framework,
    ProgramEndStatus,
    ProgramStatus,
    ProgramView,
)
from thunder_core.runtimes import AsyncRuntimeClient, RuntimeView

log = logging.getLogger("thunder_openhands.app_server")

RUNTIME_SPEC_ENV: Final = "THUNDER_OH_RUNTIME_SPEC"
AGENT_SERVER_PORT_ENV: Final = "THUNDER_OH_AGENT_SERVER_PORT"
DEFAULT_AGENT_SERVER_PORT: Final = 8000
"""The agent server's port in openhands-ai 1.11's Docker sandboxes
(``docker_sandbox_service.py``: ``AGENT_SERVER`` exposed port 8000)."""
SESSION_KEY_VARIABLE: Final = "OH_SESSION_API_KEYS_0"
"""``sandbox_service.py``'s ``SESSION_API_KEY_VARIABLE``: the agent server's accepted key."""
SERVICE_TAG: Final = "oh_sandbox_service"
USER_TAG: Final = "oh_user"
SPEC_TAG: Final = "oh_sandbox_spec"
CREATED_TAG: Final = "oh_created_at"
"""Wall-clock start (ISO 8601): a program's ``started_at`` is the scheduler's monotonic clock."""
ACQUIRE_TIMEOUT_S: Final = 600.0
"""A cold acquire may build the spec's image first; the tool manager bounds builds itself."""


# -- mirrors of openhands/app_server/sandbox/sandbox_models.py (openhands-ai 1.11.0) -----------

class SandboxStatus(Enum):
    """Mirror of ``sandbox_models.SandboxStatus``."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    ERROR = "ERROR"
    MISSING = "MISSING"


AGENT_SERVER: Final = "AGENT_SERVER"


class ExposedUrl(BaseModel):
    """Mirror of ``sandbox_models.ExposedUrl``."""

    name: str
    url: str
    port: int


class SandboxRecord(BaseModel):
    """Mirror of ``sandbox_models.SandboxRecord``."""

    id: str
    created_by_user_id: str | None


class SandboxInfo(BaseModel):
    """Mirror of ``sandbox_models.SandboxInfo``."""

    id: str
    created_by_user_id: str | None
    sandbox_spec_id: str
    status: SandboxStatus
    session_api_key: str | None
    exposed_urls: list[ExposedUrl] | None = Field(default_factory=list)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class SandboxPage(BaseModel):
    """Mirror of ``sandbox_models.SandboxPage``."""

    items: list[SandboxInfo]
    next_page_id: str | None = None


class SandboxError(Exception):
    """Mirror of ``openhands/app_server/errors.py``'s ``SandboxError``."""


@dataclass(frozen=True)
class SandboxModels:
    """The classes the service builds its answers from: the mirrors above by default, the real
    openhands-ai ones inside the app server (its code compares ``SandboxStatus`` members)."""

    info: Any = SandboxInfo
    page: Any = SandboxPage
    record: Any = SandboxRecord
    status: Any = SandboxStatus
    exposed_url: Any = ExposedUrl
    error: type[Exception] = SandboxError


@dataclass
class ThunderSandboxService:
    """openhands-ai's ``SandboxService`` on the tool manager (see the module docstring).

    ``client`` carries the admin key when the scheduler has one; ``service_name`` separates the
    sandboxes of several app servers sharing one scheduler; ``user_id`` scopes to one user.
    """

    client: AsyncThunderClient
    runtime_spec: str
    user_id: str | None = None
    service_name: str = "openhands"
    agent_server_port: int = DEFAULT_AGENT_SERVER_PORT
    models: SandboxModels = field(default_factory=SandboxModels)
    runtimes: AsyncRuntimeClient = field(init=False)

    def __post_init__(self) -> None:
        self.runtimes = AsyncRuntimeClient(self.client, acquire_timeout_s=ACQUIRE_TIMEOUT_S)

    # -- reads ------------------------------------------------------------------------------------

    async def search_sandboxes(self, page_id: str | None = None, limit: int = 100) -> Any:
        """Live sandboxes, newest first; ``page_id`` is the offset of the page."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        try:
            start = int(page_id) if page_id else 0
        except ValueError:
            start = 0
        programs = sorted(await self._programs(), key=lambda p: p.started_at, reverse=True)
        window = programs[start:start + limit]
        items = [await self._info(program) for program in window]
        more = start + limit < len(programs)
        return self.models.page(items=items, next_page_id=str(start + limit) if more else None)

    async def get_sandbox(self, sandbox_id: str) -> Any | None:
        """The sandbox, or ``None`` when it is unknown, not ours, or deleted."""
        program = await self._program(sandbox_id)
        return None if program is None else await self._info(program)

    async def batch_get_sandboxes(self, sandbox_ids: list[str]) -> list[Any | None]:
        return [await self.get_sandbox(sandbox_id) for sandbox_id in sandbox_ids]

    async def get_sandbox_by_session_api_key(self, session_api_key: str) -> Any | None:
        program = await self._by_session_key(session_api_key)
        return None if program is None else await self._info(program)

    async def get_sandbox_record_by_session_api_key(self, session_api_key: str) -> Any | None:
        program = await self._by_session_key(session_api_key)
        if program is None:
            return None
        return self.models.record(id=program.program_id,
                                  created_by_user_id=program.tags.get(USER_TAG))

    # -- lifecycle --------------------------------------------------------------------------------

    async def start_sandbox(self, sandbox_spec_id: str | None = None,
                            sandbox_id: str | None = None) -> Any:
        """Start program ``sandbox_id`` (a fresh hex UUID when not given) and acquire a runtime
        of the Thunder spec ``sandbox_spec_id`` (default: the service's ``runtime_spec``)."""
        spec = sandbox_spec_id or self.runtime_spec
        pid = sandbox_id or uuid.uuid4().hex
        tags = {SERVICE_TAG: self.service_name, SPEC_TAG: spec, RUNTIME_SPEC_TAG: spec,
                CREATED_TAG: datetime.now(UTC).isoformat()}
        if self.user_id is not None:
            tags[USER_TAG] = self.user_id
        try:
            # the scheduler treats a second start of a live program as a no-op (200), so an
            # id in use is refused here, before it could get a second runtime
            if await self._live(pid):
                raise self.models.error(f"sandbox {pid} already exists (a live program)")
            program = await self.client.start_program(
                pid, framework=Framework.OPENHANDS.value, tags=tags)
        except ThunderAPIError as exc:
            raise self.models.error(f"scheduler refused sandbox {pid}: {exc}") from exc
        except ThunderError as exc:
            raise self.models.error(f"scheduler unreachable starting {pid}: {exc}") from exc
        try:
            view = await self.runtimes.acquire(pid, spec)
        except ThunderError as exc:
            await self._end(pid, ProgramEndStatus.ERROR, "sandbox runtime acquire failed")
            raise self.models.error(
                f"no runtime of spec {spec!r} for sandbox {pid}: {exc}") from exc
        log.info("sandbox %s: runtime %s of %s (%s, %.3f s)", pid, view.runtime_id, spec,
                 view.source, view.acquire_s)
        return await self._info(program, [view])

    async def resume_sandbox(self, sandbox_id: str) -> bool:
        """Sandboxes are never paused (see ``pause_sandbox``): a known one is already running."""
        return await self._program(sandbox_id) is not None

    async def pause_sandbox(self, sandbox_id: str) -> bool:
        if await self._program(sandbox_id) is None:
            return False
        raise NotImplementedError(
            f"sandbox {sandbox_id}: the Thunder tool manager cannot pause a runtime; it keeps "
            "running until delete_sandbox, the program's end, or its lease expiring"
        )

    async def delete_sandbox(self, sandbox_id: str) -> bool:
        """Release the runtime(s) and end the program; ``False`` when the sandbox is unknown."""
        if await self._program(sandbox_id) is None:
            return False
        for view in await self._runtimes_of(sandbox_id):
            try:
                await self.runtimes.release(sandbox_id, view.runtime_id)
            except ThunderAPIError as exc:
                if exc.status_code not in (404, 409):
                    log.warning("sandbox %s: releasing runtime %s failed (%s); the program's "
                                "end removes it", sandbox_id, view.runtime_id, exc)
        await self._end(sandbox_id, ProgramEndStatus.OK, "sandbox deleted")
        return True

    # -- helpers ----------------------------------------------------------------------------------

    def _ours(self, program: ProgramView) -> bool:
        if program.status == ProgramStatus.TERMINATED:
            return False
        if program.tags.get(SERVICE_TAG) != self.service_name:
            return False
        return self.user_id is None or program.tags.get(USER_TAG) == self.user_id

    async def _programs(self) -> list[ProgramView]:
        programs = await self.client.list_programs()
        return [program for program in programs if self._ours(program)]

    async def _any_program(self, program_id: str) -> ProgramView | None:
        try:
            return await self.client.get_program(program_id)
        except ThunderAPIError as exc:
            if exc.status_code in (404, 422):
                return None
            raise

    async def _live(self, program_id: str) -> bool:
        program = await self._any_program(program_id)
        return program is not None and program.status != ProgramStatus.TERMINATED

    async def _program(self, sandbox_id: str) -> ProgramView | None:
        program = await self._any_program(sandbox_id)
        return program if program is not None and self._ours(program) else None

    async def _runtimes_of(self, program_id: str) -> list[RuntimeView]:
        try:
            return await self.runtimes.list_runtimes(program_id)
        except ThunderAPIError as exc:
            if exc.status_code == 404:
                return []
            raise

    async def _session_key(self, spec: str) -> str | None:
        try:
            view = await self.runtimes.get_spec(spec)
        except ThunderAPIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return view.spec.env.get(SESSION_KEY_VARIABLE)

    async def _by_session_key(self, session_api_key: str) -> ProgramView | None:
        matches = []
        for program in await self._programs():
            spec = program.tags.get(SPEC_TAG, self.runtime_spec)
            if session_api_key and await self._session_key(spec) == session_api_key:
                matches.append(program)
        if len(matches) > 1:
            log.warning("session key matches %d sandboxes (keys are per runtime spec): none "
                        "returned", len(matches))
            return None
        return matches[0] if matches else None

    async def _info(self, program: ProgramView, views: list[RuntimeView] | None = None) -> Any:
        if views is None:
            views = await self._runtimes_of(program.program_id)
        spec = program.tags.get(SPEC_TAG, self.runtime_spec)
        status = self.models.status.RUNNING if views else self.models.status.MISSING
        urls: list[Any] = []
        session_key: str | None = None
        if views:
            view = views[0]
            host_port = view.ports.get(str(self.agent_server_port))
            if host_port is not None:
                urls.append(self.models.exposed_url(
                    name=AGENT_SERVER, url=f"http://{view.host}:{host_port}",
                    port=self.agent_server_port))  # the container port, as docker_sandbox_service
            session_key = await self._session_key(spec)
        return self.models.info(
            id=program.program_id,
            created_by_user_id=program.tags.get(USER_TAG),
            sandbox_spec_id=spec,
            status=status,
            session_api_key=session_key,
            exposed_urls=urls,
            created_at=_created_at(program),
        )

    async def _end(self, program_id: str, status: ProgramEndStatus, reason: str) -> None:
        try:
            await self.client.end_program(program_id, status=status, reason=reason)
        except ThunderError as exc:
            log.warning("sandbox %s: ending the program failed (%s); its lease ends it",
                        program_id, exc)


def _created_at(program: ProgramView) -> datetime:
    stamp = program.tags.get(CREATED_TAG)
    try:
        return datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)
    except ValueError:
        return datetime.now(UTC)


def runtime_spec_from_env() -> str:
    spec = os.environ.get(RUNTIME_SPEC_ENV)
    if not spec:
        raise ValueError(f"set {RUNTIME_SPEC_ENV} to the Thunder runtime spec of the sandboxes "
                         "(an agent-server image spec registered with the scheduler)")
    return spec


def _build_injector() -> type:
    """``SandboxServiceInjector`` subclass for openhands-ai (imported here, see the docstring)."""
    try:
        from openhands.app_server.errors import SandboxError as OhSandboxError
        from openhands.app_server.sandbox import sandbox_models as oh
        from openhands.app_server.sandbox.sandbox_service import (
            SandboxService,
            SandboxServiceInjector,
        )
    except ImportError as exc:
        raise ImportError(
            "ThunderSandboxServiceInjector plugs into the openhands-ai app server "
            f"(OH_SANDBOX_KIND); openhands-ai is not importable here: {exc}"
        ) from exc

    models = SandboxModels(info=oh.SandboxInfo, page=oh.SandboxPage, record=oh.SandboxRecord,
                           status=oh.SandboxStatus, exposed_url=oh.ExposedUrl,
                           error=OhSandboxError)

    class BoundThunderSandboxService(ThunderSandboxService, SandboxService):  # type: ignore[misc]
        """``ThunderSandboxService`` with openhands-ai's base helpers
        (``wait_for_sandbox_running``, ``pause_old_sandboxes``, ...)."""

    class ThunderSandboxServiceInjector(SandboxServiceInjector):  # type: ignore[misc]
        """Fields from ``OH_SANDBOX_<FIELD>``, defaults from the ``THUNDER_*`` variables."""

        scheduler_url: str | None = None
        runtime_spec: str | None = None
        admin_key: str | None = None
        service_name: str = "openhands"
        agent_server_port: int = int(os.environ.get(AGENT_SERVER_PORT_ENV,
                                                    DEFAULT_AGENT_SERVER_PORT))

        async def inject(self, state: Any, request: Any = None
                         ) -> AsyncGenerator[ThunderSandboxService, None]:
            from openhands.app_server.config import get_user_context

            async with get_user_context(state, request) as user_context:
                user_id = await user_context.get_user_id()
            client = AsyncThunderClient(self.scheduler_url, admin_key=self.admin_key)
            try:
                yield BoundThunderSandboxService(
                    client=client, runtime_spec=self.runtime_spec or runtime_spec_from_env(),
                    user_id=user_id, service_name=self.service_name,
                    agent_server_port=self.agent_server_port, models=models)
            finally:
                await client.aclose()

    # openhands-sdk's DiscriminatedUnionMixin refuses classes whose qualname has "<locals>"
    # (openhands/sdk/utils/models.py, 1.34.0); these are module attributes once built
    for built in (BoundThunderSandboxService, ThunderSandboxServiceInjector):
        built.__module__ = __name__
        built.__qualname__ = built.__name__
    return ThunderSandboxServiceInjector


_injector: type | None = None


def __getattr__(name: str) -> Any:
    global _injector
    if name == "ThunderSandboxServiceInjector":
        if _injector is None:
            _injector = _build_injector()
        return _injector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGENT_SERVER",
    "AGENT_SERVER_PORT_ENV",
    "RUNTIME_SPEC_ENV",
    "ExposedUrl",
    "SandboxError",
    "SandboxInfo",
    "SandboxModels",
    "SandboxPage",
    "SandboxRecord",
    "SandboxStatus",
    "ThunderSandboxService",
    "runtime_spec_from_env",
]
