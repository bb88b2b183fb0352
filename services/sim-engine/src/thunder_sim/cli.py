"""``thunder-sim`` command line: one subcommand per module, chosen from a dict.

Each module named in :data:`COMMANDS` exposes ``HELP: str``, ``add_arguments(parser)`` and
``run(args) -> int``. Adding a subcommand is one line here plus its own module.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from thunder_sim import __version__

COMMANDS: dict[str, str] = {
    "serve": "thunder_sim.server.command",
    "replay": "thunder_sim.replay.cli",
    "demo": "thunder_sim.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thunder-sim",
        description="Simulated SGLang GPU engine and real-trace replay for Thunder.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args))
