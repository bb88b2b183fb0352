"""The current program, carried in a contextvar, and the httpx hook that puts it on requests.

    with thunder_core.program("agent-42"):
        openai.OpenAI(base_url=".../v1").chat.completions.create(...)   # carries the header

Entering ``program()`` installs (once per process) a wrapper around ``Client.send`` and
``AsyncClient.send`` of ``httpx`` and, when installed, ``httpx2`` (the fork that ``openai`` 3.x
sends through); the ``openai`` SDK, litellm and LangChain's ``ChatOpenAI`` all send through
them. The wrapper adds ``X-Thunder-Program-Id`` only when a program is current, the
request does not already carry the header, and the request goes to the scheduler: once a
scheduler is configured (``THUNDER_SCHEDULER_URL``, or :func:`register_scheduler`, which the
adapters call with the URL they were given), requests to any other origin (LangSmith, a
third-party API, a tool's HTTP calls) never carry the program's identity. With no scheduler
configured at all the caller alone decides where ``program()`` requests go, and every
request inside it is tagged. Code outside ``program()`` is untouched. The
contextvar follows asyncio tasks and ``contextvars.copy_context()``, so concurrent agents in one
process keep their identities apart.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

from thunder_core.contract import PROGRAM_ID_HEADER, validate_program_id

SCHEDULER_URL_ENV: Final = "THUNDER_SCHEDULER_URL"
"""Where the scheduler is (same name as ``thunder_core.client.SCHEDULER_URL_ENV``)."""

_current_program: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "thunder_current_program", default=None
)
_install_lock = threading.Lock()
_hook_installed = threading.Event()
_resolvers: list[Callable[[], str | None]] = []


def current_program_id() -> str | None:
    """The program id of the running code: ``program()``'s, else a registered resolver's."""
    value = _current_program.get()
    if value is not None:
        return value
    for resolve in _resolvers:
        value = resolve()
        if value is not None:
            return value
    return None


def add_program_resolver(resolve: Callable[[], str | None]) -> None:
    """Register a fallback that finds the current program elsewhere (e.g. LangChain's config).

    Resolvers run only when no ``program()`` block is active, in registration order.
    """
    if resolve not in _resolvers:
        _resolvers.append(resolve)
    install_httpx_hook()


@contextmanager
def program(program_id: str) -> Iterator[str]:
    """Make ``program_id`` the current program for the block (and tasks started inside it)."""
    validate_program_id(program_id)
    install_httpx_hook()
    token = _current_program.set(program_id)
    try:
        yield program_id
    finally:
        _current_program.reset(token)


_registered: set[tuple[str, str, int]] = set()
_env_origin: tuple[str | None, tuple[str, str, int] | None] = (None, None)


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    scheme, host = scheme.lower(), host.lower()
    if host in _LOOPBACK:  # http://localhost:8300 and http://127.0.0.1:8300 are one scheduler
        host = "loopback"
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)


def _url_origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return None
    try:
        return _origin(parts.scheme, parts.hostname, parts.port)
    except ValueError:  # a malformed port
        return None


def register_scheduler(url: str) -> None:
    """Requests to ``url``'s origin (scheme, host, port) carry the current program's id."""
    origin = _url_origin(url)
    if origin is None:
        raise ValueError(f"not a scheduler URL: {url!r} (expected http://host:port)")
    _registered.add(origin)


def forget_schedulers() -> None:
    """Forget the origins :func:`register_scheduler` added (the environment still counts)."""
    _registered.clear()


def _scheduler_origins() -> set[tuple[str, str, int]]:
    global _env_origin
    value = os.environ.get(SCHEDULER_URL_ENV) or None
    if value != _env_origin[0]:
        _env_origin = (value, _url_origin(value) if value else None)
    env = _env_origin[1]
    return _registered | {env} if env is not None else _registered


def _goes_to_scheduler(request: Any) -> bool:
    origins = _scheduler_origins()
    if not origins:
        return True
    url = request.url
    return _origin(url.scheme, url.host, url.port) in origins


def _tag(request: Any) -> None:
    if PROGRAM_ID_HEADER in request.headers or not _goes_to_scheduler(request):
        return
    program_id = current_program_id()
    if program_id is not None:
        request.headers[PROGRAM_ID_HEADER] = program_id


HOOKED_MODULES = ("httpx", "httpx2")
"""HTTP client modules whose ``Client`` / ``AsyncClient`` get the hook, when importable."""


def _hook_module(module: Any) -> None:
    sync_send = module.Client.send
    async_send = module.AsyncClient.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _tag(request)
        return sync_send(self, request, *args, **kwargs)

    async def asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _tag(request)
        return await async_send(self, request, *args, **kwargs)

    module.Client.send = send
    module.AsyncClient.send = asend


def install_httpx_hook() -> None:
    """Wrap ``Client.send`` / ``AsyncClient.send`` once so requests carry the program."""
    if _hook_installed.is_set():
        return
    with _install_lock:
        if _hook_installed.is_set():  # another thread won the race
            return
        for name in HOOKED_MODULES:
            if name != "httpx" and importlib.util.find_spec(name) is None:
                continue
            _hook_module(importlib.import_module(name))
        _hook_installed.set()


def program_headers(program_id: str | None = None) -> dict[str, str]:
    """``{"X-Thunder-Program-Id": id}`` for the given or current program (empty if none)."""
    value = program_id if program_id is not None else current_program_id()
    return {PROGRAM_ID_HEADER: value} if value is not None else {}


__all__ = [
    "add_program_resolver",
    "current_program_id",
    "forget_schedulers",
    "install_httpx_hook",
    "program",
    "program_headers",
    "register_scheduler",
]
