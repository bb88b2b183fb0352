"""The CLI as a user meets it: help on every flag with its default and choices, ``--version``,
config files in the flag spelling, and ``check-config`` refusing what ``serve`` would."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest

from thunder_core.contract import CONTRACT_VERSION
from thunder_scheduler import __version__
from thunder_scheduler.cli import build_parser, main
from thunder_scheduler.extras import MissingExtraError, missing_extra, require_extra
from thunder_scheduler.settings import SettingsError, load_settings, normalise_config_keys


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("THUNDER_"):
            monkeypatch.delenv(name)


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_every_flag_has_help_with_its_default(command: str) -> None:
    actions = [a for a in _subcommand(command)._actions if a.option_strings and a.dest != "help"]
    assert len(actions) > 40
    no_help = [a.option_strings[0] for a in actions if not (a.help or "").strip()]
    assert no_help == []
    setting_flags = [a for a in actions if a.dest not in ("config", "backends")]
    no_default = [a.option_strings[0] for a in setting_flags if "(default:" not in (a.help or "")]
    assert no_default == []


def test_help_renders_choices_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--upstream-client {aiohttp,httpx,raw}" in out
    assert "(default: raw)" in out
    assert "--tools-backend {docker,local,none}" in out
    assert "thunder" in out and "round_robin" in out  # policy choices
    assert "--high-watermark" in out and "(default: the policy's own)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"thunder-scheduler {__version__} (contract {CONTRACT_VERSION}, ")


def test_config_file_accepts_the_flag_spelling(tmp_path: Path) -> None:
    path = tmp_path / "thunder.toml"
    path.write_text(
        'high-watermark = 0.8\nlow_watermark = 0.5\nbackend = ["sglang=http://gpu1:30000"]\n'
        "tools-max-runtimes = 9\n[tools]\nexec-timeout-s = 7.5\n"
    )
    settings = load_settings(config_file=path)
    assert settings.high_watermark == 0.8
    assert settings.low_watermark == 0.5
    assert settings.backends == ["sglang-gpu1-30000@sglang=http://gpu1:30000"]
    assert settings.tools.max_runtimes == 9
    assert settings.tools.exec_timeout_s == 7.5


def test_config_file_refuses_one_setting_in_two_spellings(tmp_path: Path) -> None:
    path = tmp_path / "thunder.toml"
    path.write_text("high-watermark = 0.8\nhigh_watermark = 0.7\n")
    with pytest.raises(SettingsError, match="high_watermark given twice"):
        load_settings(config_file=path)


def test_unknown_kebab_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "thunder.toml"
    path.write_text("no-such-knob = 1\n")
    with pytest.raises(SettingsError, match="no_such_knob: unknown setting"):
        load_settings(config_file=path)


def test_normalise_keeps_field_spelling() -> None:
    assert normalise_config_keys({"port": 1, "tools": {"max_runtimes": 2}}) == {
        "port": 1, "tools": {"max_runtimes": 2}
    }


def test_duplicate_backend_names_are_a_settings_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "check-config", "--backend", "a@sglang=http://h1:1", "--backend", "a@vllm=http://h2:2"
    ])
    assert code == 2
    assert "backend names must be unique, a given twice" in capsys.readouterr().err


def test_check_config_refuses_a_port_serve_could_not_bind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["check-config", "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert "serve would refuse" in err and f"cannot listen on 127.0.0.1:{port}" in err


def test_check_config_refuses_an_unreachable_docker_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "no-daemon.sock"
    code = main([
        "check-config", "--port", "0", "--tools-enabled", "--tools-docker-host", f"unix://{sock}"
    ])
    assert code == 2
    assert "no Docker daemon answers" in capsys.readouterr().err


def test_check_config_passes_and_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--port", "0", "--high-watermark", "0.9"]) == 0
    assert json.loads(capsys.readouterr().out)["high_watermark"] == 0.9


def test_missing_extra_names_the_pip_extra() -> None:
    assert missing_extra("json", "anything") is None
    problem = missing_extra("docker_not_installed_here", "the tool backend")
    assert problem is not None and "pip install 'thunder-scheduler[" in problem
    with pytest.raises(MissingExtraError, match="thunder-scheduler"):
        require_extra("docker_not_installed_here", "the tool backend")
