"""How settings present themselves to a user: flag help, choices, ``--version``, preflight.

* ``flag_help(field)``: the field's description plus its default, as ``--help`` prints it;
* ``field_choices(field)``: the allowed values of a ``Literal`` setting, for ``choices=``;
* ``version_line()``: what ``--version`` prints (package, wire contract, Python);
* ``preflight(settings)``: what ``serve`` would refuse beyond validation (the policy and its
  knobs, a socket it cannot bind, a Docker daemon it cannot reach), so ``check-config`` fails
  where ``serve`` would.
"""

from __future__ import annotations

import socket
import sys
import typing
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from thunder_core.contract import CONTRACT_VERSION
from thunder_scheduler import __version__
from thunder_scheduler.settings import ServiceSettings, SettingsError

__all__ = [
    "field_choices", "field_default", "flag_help", "preflight", "shown_default", "version_line",
]

DOCKER_PING_TIMEOUT_S = 5
"""A local daemon answers a ping in milliseconds; 5 s separates "down" from "busy"."""


def field_default(field: FieldInfo) -> Any:
    """The value a setting takes when nobody sets it."""
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def shown_default(value: Any) -> str:
    """A default as help and docs print it (``unset``, ``on`` / ``off``, ``none``)."""
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def field_choices(field: FieldInfo) -> list[str]:
    """The values of a ``Literal[...]`` (or ``Literal[...] | None``) setting, else []."""
    annotation = field.annotation
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if typing.get_origin(candidate) is typing.Literal:
            return [str(arg) for arg in typing.get_args(candidate)]
    return []


def flag_help(field: FieldInfo) -> str:
    """``description (default: X)``, escaped for argparse's %-formatting."""
    text = (field.description or "").strip()
    if "(default:" not in text:  # a description may say what "unset" means itself
        text = f"{text} (default: {shown_default(field_default(field))})".strip()
    return text.replace("%", "%%")


def version_line() -> str:
    """``0.1.0 (contract 1, Python 3.12.1)``."""
    python = ".".join(map(str, sys.version_info[:3]))
    return f"{__version__} (contract {CONTRACT_VERSION}, Python {python})"


def _check_listen(settings: ServiceSettings) -> str | None:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.host, settings.port))
    except OSError as exc:
        return (f"--host/--port: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror or exc}")
    return None


def _check_docker(settings: ServiceSettings) -> str | None:
    if not settings.tools_enabled or settings.tools.backend != "docker":
        return None
    import os

    import docker  # installed: the settings refuse tools_backend=docker without it

    base_url = settings.tools.docker_host or os.environ.get("DOCKER_HOST") \
        or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=base_url, timeout=DOCKER_PING_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return (f"THUNDER_TOOLS__DOCKER_HOST / --tools-docker-host: no Docker daemon answers at "
                f"{base_url} ({type(exc).__name__}); start one or use --tools-backend local")
    return None


def preflight(settings: ServiceSettings) -> list[str]:
    """Problems ``serve`` would stop at, one line each naming the setting; [] if none."""
    from thunder_scheduler.app import make_core

    problems: list[str] = []
    try:
        make_core(settings)
    except SettingsError as exc:
        problems.extend(exc.problems)
    for check in (_check_listen, _check_docker):
        problem = check(settings)
        if problem is not None:
            problems.append(problem)
    return problems
