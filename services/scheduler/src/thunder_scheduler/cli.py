"""``thunder-scheduler``: run the service, or print the effective settings.

    thunder-scheduler serve --backend sglang=http://gpu1:30000 --backend sglang=http://gpu2:30000
    thunder-scheduler check-config [--config thunder.toml] [flags...]

Every setting of ``settings.ServiceSettings`` is a flag (``--high-watermark 0.9``), and every
field of the nested tool-manager settings too (``--tools-max-runtimes 8``); flags beat
``THUNDER_*`` environment variables, which beat the ``--config`` TOML file, which beats the
defaults. A bad value exits with status 2 and a message naming the flag and the env var, never
a traceback. ``serve`` prints ``thunder-scheduler listening on http://HOST:PORT`` once the
socket is bound (``--port 0`` picks a free port; the line tells which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from thunder_scheduler.settings import ServiceSettings, SettingsError, load_settings
from thunder_scheduler.settings_help import field_choices, flag_help, preflight, version_line
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_scheduling.registry import policy_names

__all__ = ["build_parser", "main"]

PROG = "thunder-scheduler"
_NESTED: dict[str, type[BaseModel]] = {"tools": ToolManagerSettings}
"""Nested settings models: each field is a flag ``--<setting>-<field>`` (``--tools-max-runtimes``),
merged with the ``[tools]`` TOML table and ``THUNDER_TOOLS__<FIELD>`` env vars field by field."""


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return bool in typing.get_args(annotation)
    return False


def _add_flag(group: argparse._ArgumentGroup, flag: str, dest: str, field: FieldInfo) -> None:
    help_text = flag_help(field)
    if _is_bool(field.annotation):
        group.add_argument(
            flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    choices = field_choices(field)
    if dest == "policy":
        choices = policy_names()
    # choices are shown, not enforced by argparse: the settings check them, so a bad value
    # reads the same from a flag, an env var or the config file
    metavar = "{" + ",".join(choices) + "}" if choices else dest.rsplit("__", 1)[-1].upper()
    group.add_argument(flag, dest=dest, default=None, metavar=metavar, help=help_text)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also THUNDER_<NAME> env vars or --config)")
    for name, field in ServiceSettings.model_fields.items():
        if name in _NESTED:
            nested = parser.add_argument_group(
                f"{name} settings (also THUNDER_{name.upper()}__<FIELD> env vars or the "
                f"[{name}] table of --config)"
            )
            for sub, sub_field in _NESTED[name].model_fields.items():
                _add_flag(nested, f"--{name}-{sub}".replace("_", "-"), f"{name}__{sub}",
                          sub_field)
            continue
        if name == "backends":
            group.add_argument(
                "--backend", dest="backends", action="append", metavar="[NAME@]KIND=URL",
                help="an engine to serve from; repeat for several (KIND: sglang, vllm, llamacpp)",
            )
            continue
        _add_flag(group, "--" + name.replace("_", "-"), name, field)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version_line()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, help_text in (
        ("serve", "run the scheduler service"),
        ("check-config", "print the effective settings as JSON and exit"),
    ):
        cmd = sub.add_parser(command, help=help_text, description=help_text)
        cmd.add_argument(
            "--config", metavar="FILE",
            help="TOML file with settings (keys as the fields or the flags spell them)",
        )
        _add_setting_flags(cmd)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name in ServiceSettings.model_fields:
        if name in _NESTED:
            given = {
                sub: getattr(args, f"{name}__{sub}")
                for sub in _NESTED[name].model_fields
                if getattr(args, f"{name}__{sub}", None) is not None
            }
            if given:  # merged into the env / TOML values field by field (pydantic-settings)
                flags[name] = given
            continue
        value = getattr(args, name, None)
        if value is not None:
            flags[name] = SecretStr(value) if name in ("api_key", "admin_key") else value
    return flags


def _serve(settings: ServiceSettings) -> int:
    import uvicorn

    from thunder_scheduler.app import create_app
    from thunder_scheduler.serving import ensure_fd_room, listen_socket, server_config

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    try:
        sock = listen_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"{PROG}: error: --host/--port: cannot listen on {settings.host}:"
              f"{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    family = sock.family
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"{PROG} listening on http://{shown}:{port}", file=sys.stderr, flush=True)
    warning = ensure_fd_room(settings.max_connections)
    if warning is not None:
        logging.getLogger(__name__).warning("%s", warning)
    server = uvicorn.Server(server_config(app, settings))
    quiet = _QuietStartupFailure(app.state.thunder)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except SystemExit:  # uvicorn exits (status 3) when the lifespan start-up failed
        if server.started:
            raise
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    failure = app.state.thunder.startup_failure
    if not server.started:
        reason = startup_reason(failure) if failure is not None else "start-up failed"
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return 1
    return 0


def startup_reason(exc: BaseException) -> str:
    """One line for a failed start-up: what failed and a hint what to do."""
    from thunder_scheduler.tools.base import BackendUnavailable

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, BackendUnavailable):
        return (f"tool manager: {text} (hint: start the Docker daemon, point --tools-docker-host "
                f"at its socket, choose --tools-backend local, or run without --tools-enabled)")
    return f"start-up failed: {type(exc).__name__}: {text}"


class _QuietStartupFailure(logging.Filter):
    """Drops uvicorn's traceback of a failed lifespan start-up: ``serve`` prints one line."""

    def __init__(self, parts: Any) -> None:
        super().__init__()
        self._parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        return self._parts.startup_failure is None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(_flags(args), args.config)
        from thunder_scheduler.app import make_core

        make_core(settings)  # an unknown policy or knob is a settings error too
    except SettingsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        problems = preflight(settings)
        if problems:
            print(f"{PROG}: error: " + "\n  ".join(["serve would refuse:", *problems]),
                  file=sys.stderr)
            return 2
        print(json.dumps(settings.redacted(), indent=2, sort_keys=True))
        return 0
    return _serve(settings)
