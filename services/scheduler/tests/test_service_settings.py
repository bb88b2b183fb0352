"""Settings precedence (flags > env > TOML > defaults) and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from thunder_scheduler.cli import _flags, build_parser, main
from thunder_scheduler.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("THUNDER_"):
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thunder.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8300
    assert settings.backends == []
    assert settings.tools_enabled is False
    assert settings.policy_knobs() == {}


def test_flags_beat_env_beat_toml_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _toml(tmp_path, 'port = 9001\nhigh_watermark = 0.7\nlog_level = "debug"\n'
                             'tick_s = 3.0\n')
    monkeypatch.setenv("THUNDER_PORT", "9002")
    monkeypatch.setenv("THUNDER_HIGH_WATERMARK", "0.8")
    settings = load_settings({"port": "9003"}, config)
    assert settings.port == 9003              # flag over env and TOML
    assert settings.high_watermark == 0.8     # env over TOML
    assert settings.log_level == "debug"      # TOML over default
    assert settings.tick_s == 3.0
    assert settings.time_scale == 1.0         # default


def test_backends_from_env_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THUNDER_BACKENDS", "sglang=http://gpu1:30000, gpu2@vllm=http://gpu2:8000/")
    settings = load_settings()
    assert settings.backends == [
        "sglang-gpu1-30000@sglang=http://gpu1:30000",
        "gpu2@vllm=http://gpu2:8000",
    ]


def test_nested_tool_settings_from_env_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _toml(
        tmp_path, "tools_enabled = true\n[tools]\nmax_runtimes = 5\nbackend = \"local\"\n"
    )
    monkeypatch.setenv("THUNDER_TOOLS__MAX_RUNTIMES", "7")
    settings = load_settings(config_file=config)
    assert settings.tools_enabled
    assert settings.tools.max_runtimes == 7
    assert settings.tools.backend == "local"


def test_error_names_env_var_and_flag() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"high_watermark": "1.5"})
    (problem,) = caught.value.problems
    assert problem.startswith("THUNDER_HIGH_WATERMARK / --high-watermark:")
    assert "less than or equal to 1" in problem


def test_unknown_backend_kind_names_flag_and_allowed_kinds() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"backends": ["tgi=http://x:1"]})
    message = str(caught.value)
    assert "--backend" in message
    for kind in ("sglang", "vllm", "llamacpp"):
        assert kind in message


def test_low_watermark_above_high_is_refused() -> None:
    with pytest.raises(SettingsError, match="low_watermark"):
        load_settings({"high_watermark": 0.8, "low_watermark": 0.9})


def test_unknown_toml_key_and_bad_toml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="hihg_watermark: unknown setting"):
        load_settings(config_file=_toml(tmp_path, "hihg_watermark = 0.5\n"))
    with pytest.raises(SettingsError, match="--config"):
        load_settings(config_file=_toml(tmp_path, "port = = 3\n"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(config_file=tmp_path / "missing.toml")


def test_secrets_are_redacted() -> None:
    settings = load_settings({"admin_key": "s3cret", "api_key": "k"})
    shown = settings.redacted()
    assert shown["admin_key"] == shown["api_key"] == "**********"
    assert "s3cret" not in repr(settings)


def test_cli_check_config_prints_effective_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("THUNDER_TICK_S", "2.5")
    assert main(["check-config", "--backend", "llamacpp=http://127.0.0.1:8080",
                 "--time-scale", "4", "--llamacpp-slot-offload"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["time_scale"] == 4.0
    assert shown["tick_s"] == 2.5
    assert shown["llamacpp_slot_offload"] is True
    assert shown["backends"] == ["llamacpp-127.0.0.1-8080@llamacpp=http://127.0.0.1:8080"]


def test_cli_bad_backend_exits_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "tgi=http://x:1"]) == 2
    err = capsys.readouterr().err
    assert "--backend" in err and "allowed: llamacpp, sglang, vllm" in err
    assert "Traceback" not in err


def test_cli_refuses_a_knob_the_policy_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--policy", "sticky", "--high-watermark", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "THUNDER_HIGH_WATERMARK / --high-watermark: the sticky policy has no such knob" in err


def test_promote_after_s_reaches_the_policy_and_zero_turns_promotion_off() -> None:
    from thunder_scheduler.app import make_core

    def promoted(flags: list[str]) -> float | None:
        args = build_parser().parse_args(["serve", "--policy", "thunder", *flags])
        return make_core(load_settings(_flags(args))).policy.promote_after_s

    assert promoted([]) == 150.0  # the policy's own default
    assert promoted(["--promote-after-s", "600"]) == 600.0
    assert promoted(["--promote-after-s", "0"]) is None


def test_cli_refuses_a_negative_promotion_age_and_a_policy_without_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--promote-after-s", "-1"]) == 2
    assert "--promote-after-s" in capsys.readouterr().err
    assert main(["check-config", "--policy", "round_robin", "--promote-after-s", "60"]) == 2
    err = capsys.readouterr().err
    assert ("THUNDER_PROMOTE_AFTER_S / --promote-after-s: "
            "the round_robin policy has no such knob") in err


def test_cli_unknown_policy_lists_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--policy", "fifo"]) == 2
    err = capsys.readouterr().err
    assert "--policy: unknown policy 'fifo'" in err and "sticky" in err


def test_every_setting_is_documented() -> None:
    from thunder_scheduler.settings import ServiceSettings

    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    missing = [name for name in ServiceSettings.model_fields if f"| `{name}` |" not in doc]
    assert missing == []


@pytest.mark.parametrize("enabled", [False, True])
def test_vllm_backends_are_built_with_the_operators_engine_flags(enabled: bool) -> None:
    import httpx

    from thunder_scheduler.app import create_app
    from thunder_scheduler.backends.base import RequestHints

    flag = "--vllm-priority-scheduling" if enabled else "--no-vllm-priority-scheduling"
    args = build_parser().parse_args([
        "serve", "--backend", "gpu2@vllm=http://gpu2:8000", flag,
        "--vllm-cached-tokens-in-usage",
    ])
    settings = load_settings(_flags(args))
    app = create_app(settings, http=httpx.AsyncClient())
    backend = app.state.thunder.backends["gpu2"]
    assert backend.capabilities.request_priority is enabled
    assert backend.capabilities.cached_tokens_in_usage
    body = backend.decorate("/v1/completions", {}, RequestHints("p", "p:1", priority=2))
    assert body.get("priority") == (-2 if enabled else None)


def test_cli_tool_flags_merge_with_env_and_toml_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    config = _toml(tmp_path, "[tools]\nbackend = \"local\"\nmax_runtimes = 5\n")
    monkeypatch.setenv("THUNDER_TOOLS__EXEC_TIMEOUT_S", "30")
    assert main(["check-config", "--config", str(config), "--tools-max-runtimes", "8",
                 "--no-tools-prepare-on-admit"]) == 0
    tools = json.loads(capsys.readouterr().out)["tools"]
    assert tools["max_runtimes"] == 8            # flag beats the file
    assert tools["backend"] == "local"           # the file's other field is kept
    assert tools["exec_timeout_s"] == 30.0       # and the env var's
    assert tools["prepare_on_admit"] is False


def test_cli_bad_tool_flag_names_the_flag_and_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--tools-max-runtimes", "0"]) == 2
    err = capsys.readouterr().err
    assert "THUNDER_TOOLS__MAX_RUNTIMES / --tools-max-runtimes:" in err
    assert "Traceback" not in err


def test_every_tool_setting_has_a_flag_and_is_documented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from thunder_scheduler.tools.settings import ToolManagerSettings

    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name in ToolManagerSettings.model_fields:
        flag = "--tools-" + name.replace("_", "-")
        assert f"| `tools.{name}` | `{flag}` |" in doc, name
        assert flag in help_text, name


def test_https_backends_are_refused_unless_a_tls_client_forwards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--backend", "a@sglang=https://gpu1:30000"]) == 2
    err = capsys.readouterr().err
    assert "--backend" in err and "--upstream-client aiohttp or httpx" in err
    assert len(err.strip().splitlines()) == 2  # the header line and the reason, no traceback
    assert main(["check-config", "--backend", "a@sglang=https://gpu1:30000",
                 "--upstream-client", "aiohttp"]) == 0
