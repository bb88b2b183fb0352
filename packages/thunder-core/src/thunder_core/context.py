"""The current program, carried in a contextvar, and the httpx hook that puts it on requests.

    with thunder_core.program("agent-42"):
        openai.OpenAI(base_url=".../v1").chat.completions.create(...)   # carries the header

Entering ``program()`` installs (once per process) a wrapper around ``Client.send`` and
``AsyncClient.send`` of ``httpx`` and, when installed, ``httpx2`` (the fork that ``openai`` 3.x
sends through); the ``openai`` SDK, litellm and LangChain's ``ChatOpenAI`` all send through
them. The wrapper adds ``X-Thunder-Program-Id`` only when a program is current and the
request does not already carry the header, so code outside ``program()`` is untouched. The
contextvar follows asyncio tasks and ``contextvars.copy_context()``, so concurrent agents in one
process keep their identities apart.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from thunder_core.contract import PROGRAM_ID_HEADER, validate_program_id

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


def _tag(request: Any) -> None:
    if PROGRAM_ID_HEADER in request.headers:
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
    "install_httpx_hook",
    "program",
    "program_headers",
]
