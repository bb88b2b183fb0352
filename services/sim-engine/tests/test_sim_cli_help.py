"""Every flag of every ``thunder-sim`` subcommand has help; ``--version`` answers."""

from __future__ import annotations

import argparse

import pytest

from thunder_sim import __version__
from thunder_sim.cli import COMMANDS, build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_has_help(command: str) -> None:
    parser = _subcommands()[command]
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    no_help = [a.option_strings[0] for a in flags if not (a.help or "").strip()]
    assert no_help == []


def test_serve_help_shows_defaults_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "(default: 30000)" in out and "(default: h100-qwen3-8b)" in out
    assert "--radix-eviction-policy {lru,priority}" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"thunder-sim {__version__}"
