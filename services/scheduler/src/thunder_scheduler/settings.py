"""The service's settings, from four layers: flags > ``THUNDER_*`` env vars > TOML file > defaults.

``load_settings(flags, config_file)`` builds them; a bad value raises :class:`SettingsError`
whose message names the setting the way the user spelled it: the environment variable and the
flag (``THUNDER_HIGH_WATERMARK / --high-watermark: ...``), plus the TOML key.

Every field name is also the TOML key, the env var (upper-cased, ``THUNDER_`` prefix) and the
flag (``--`` and dashes). List settings (``backends``) take a comma-separated env var.

Defaults and their sources:

* ``host`` 127.0.0.1: loopback unless the operator opens it up (our choice: safe by default).
* ``port`` 8300: our choice, away from SGLang's 30000, vLLM's 8000 and llama-server's 8080 so
  the service can run beside them on one host.
* ``policy``: the scheduling policy, by the core registry's name.
* policy knobs (``high_watermark``, ``low_watermark``, ``decay_half_life_s``): None means the
  policy's own default, documented beside each policy's config dataclass in
  ``thunder_scheduling.policies``; set here only to override it.
* ``lease_s`` / ``max_paused_s``: None means the core's defaults (30 min / 5 min,
  ``thunder_scheduling.config``).
* ``tick_s`` 1.0 modelled second: the backstop tick. Admission and restore run on every event
  (issue 4), so the tick only catches time-driven changes (decay, aging, leases); ThunderAgent
  ticks every 5 s and reports throughput insensitive to ticks of 2-10 s (arXiv 2602.13692),
  so 1 s is well inside the flat region.
* ``time_scale`` 1.0: modelled seconds per wall second, the simulator's knob (``clock.py``).
* data-plane knobs (``max_body_bytes``, ``upstream_*``, ``abort_timeout_s``): defaults and
  their reasons in ``thunder_scheduler.proxy.settings``.
* ``monitor_interval_s``, ``monitor_backoff_max_s``, ``monitor_unhealthy_after_failures``: the
  backend monitor's poll period, probe backoff cap and failures before "unhealthy"; defaults
  and reasons in ``thunder_scheduler.backends.monitor.MonitorConfig``.
* ``prewarm_bodies_max`` 4096: programs whose last request body is kept for pre-restore warm-up
  (a bounded LRU; at about 64 KB per 16k-token body that is at most ~256 MB, usually far less).
* ``tools_enabled`` False: the tool manager (Docker runtimes) is opt-in; its own settings are
  the ``[tools]`` TOML table or ``THUNDER_TOOLS__<FIELD>`` env vars, defaults and reasons in
  ``thunder_scheduler.tools.settings``.
* ``llamacpp_slot_offload`` False: pin each program to a llama.cpp slot and save / restore the
  slot's KV on pause / resume (and erase it at program end). Off by default: pinning makes a
  program wait for its slot.
* ``vllm_priority_scheduling`` / ``vllm_cached_tokens_in_usage`` False: what the vLLM servers
  were started with (``--scheduling-policy priority``, ``--enable-prompt-tokens-details``).
  vLLM does not publish either, so the operator states them; the defaults are vLLM's own
  defaults (FCFS, no cached-token details), under which a priority field is refused.
  SGLang publishes its flags in ``/server_info``, so SGLang needs no such settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from thunder_scheduler.backends.monitor import MonitorConfig
from thunder_scheduler.backends.registry import parse_backend_spec
from thunder_scheduler.proxy.settings import ProxySettings, UpstreamClientName
from thunder_scheduler.tools.settings import ToolManagerSettings
from thunder_scheduling.registry import DEFAULT_POLICY

__all__ = ["ENV_PREFIX", "ServiceSettings", "SettingsError", "load_settings", "setting_names"]

ENV_PREFIX = "THUNDER_"
LogLevel = Literal["debug", "info", "warning", "error"]
_TOML_FILE: ContextVar[Path | None] = ContextVar("thunder_settings_toml", default=None)
_PROXY_DEFAULTS = ProxySettings()
_MONITOR_DEFAULTS = MonitorConfig()


def setting_names(field: str, sub: str | None = None) -> str:
    """``THUNDER_HIGH_WATERMARK / --high-watermark``: how a user spells setting ``field``
    (``THUNDER_TOOLS__MAX_RUNTIMES / --tools-max-runtimes`` for field ``sub`` of a nested one)."""
    if sub is not None:
        flag = "--" + f"{field}-{sub}".replace("_", "-")
        return f"{ENV_PREFIX}{field.upper()}__{sub.upper()} / {flag}"
    flag = "--backend" if field == "backends" else "--" + field.replace("_", "-")
    return f"{ENV_PREFIX}{field.upper()} / {flag}"


class SettingsError(ValueError):
    """Invalid settings; ``problems`` holds one line per bad setting, each naming it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


def _check_backend_spec(spec: str) -> str:
    parsed = parse_backend_spec(spec)  # ValueError names the problem and the allowed kinds
    return f"{parsed.name}@{parsed.kind}={parsed.url}"


class ServiceSettings(BaseSettings):
    """All knobs of ``thunder-scheduler serve`` (see the module docstring for defaults)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="engines, each KIND=URL (sglang, vllm, llamacpp)"
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8300, ge=0, le=65535, description="port (0: any free port)")
    log_level: LogLevel = "info"

    # -- scheduling -------------------------------------------------------------------------
    policy: str = Field(default=DEFAULT_POLICY, min_length=1, description="scheduling policy")
    high_watermark: float | None = Field(default=None, gt=0, le=1)
    low_watermark: float | None = Field(default=None, gt=0, le=1)
    decay_half_life_s: float | None = Field(default=None, gt=0)
    max_paused_s: float | None = Field(default=None, gt=0, description="aging bound")
    lease_s: float | None = Field(default=None, gt=0, description="idle program lifetime")
    tick_s: float = Field(default=1.0, gt=0, description="backstop tick, modelled seconds")
    time_scale: float = Field(default=1.0, gt=0, description="modelled s per wall s")
    prewarm_bodies_max: int = Field(default=4096, ge=0)
    llamacpp_slot_offload: bool = False
    vllm_priority_scheduling: bool = Field(
        default=False, description="vLLM servers run --scheduling-policy priority"
    )
    vllm_cached_tokens_in_usage: bool = Field(
        default=False, description="vLLM servers run --enable-prompt-tokens-details"
    )

    # -- backends monitor ---------------------------------------------------------------------
    monitor_interval_s: float = Field(default=_MONITOR_DEFAULTS.poll_interval_s, gt=0)
    monitor_backoff_max_s: float = Field(default=_MONITOR_DEFAULTS.backoff_max_s, gt=0)
    monitor_unhealthy_after_failures: int = Field(
        default=_MONITOR_DEFAULTS.unhealthy_after_failures, ge=1
    )

    # -- data plane (defaults from ProxySettings) -------------------------------------------
    max_body_bytes: int = Field(default=_PROXY_DEFAULTS.max_body_bytes, gt=0)
    upstream_client: UpstreamClientName = _PROXY_DEFAULTS.upstream_client
    upstream_connect_timeout_s: float = Field(
        default=_PROXY_DEFAULTS.upstream_connect_timeout_s, gt=0
    )
    upstream_read_timeout_s: float = Field(default=_PROXY_DEFAULTS.upstream_read_timeout_s, gt=0)
    upstream_max_connections: int = Field(
        default=_PROXY_DEFAULTS.upstream_max_connections, gt=0
    )
    abort_timeout_s: float = Field(default=_PROXY_DEFAULTS.abort_timeout_s, gt=0)

    # -- connections and limits (serving.py, lifecycle_api.py) ---------------------------------
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600,
                                    description="time to receive a request head (408 after)")
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600,
                                  description="time to receive a request body (408 after)")
    max_connections: int = Field(default=4096, ge=1, le=1_000_000,
                                 description="open client connections (503 beyond)")
    max_live_programs: int = Field(default=100_000, ge=1,
                                   description="live programs in all (429 beyond)")
    max_live_programs_per_key: int = Field(default=10_000, ge=1,
                                           description="live programs per client key (429 beyond)")
    max_lease_s: float = Field(default=86_400.0, gt=0, le=31_536_000,
                               description="largest lease a program may ask for")
    max_tags_bytes: int = Field(default=4096, ge=2, description="largest tags object, as JSON")

    # -- auth ---------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(default=None, description="client key (OpenAI endpoints)")
    admin_key: SecretStr | None = Field(default=None, description="admin key (lifecycle API)")

    # -- tool manager -------------------------------------------------------------------------
    tools_enabled: bool = Field(default=False, description="run the tool manager")
    tools: ToolManagerSettings = Field(default_factory=ToolManagerSettings)

    @field_validator("backends", mode="before")
    @classmethod
    def _split_backends(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("backends")
    @classmethod
    def _valid_backends(cls, value: list[str]) -> list[str]:
        return [_check_backend_spec(spec) for spec in value]

    @model_validator(mode="after")
    def _watermarks_ordered(self) -> ServiceSettings:
        high, low = self.high_watermark, self.low_watermark
        if high is not None and low is not None and low > high:
            raise ValueError(
                f"low_watermark ({low}) must be <= high_watermark ({high}) "
                f"({setting_names('low_watermark')})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # -- derived views --------------------------------------------------------------------------

    def proxy_settings(self) -> ProxySettings:
        """The data plane's settings."""
        return ProxySettings(
            max_body_bytes=self.max_body_bytes,
            upstream_client=self.upstream_client,
            upstream_connect_timeout_s=self.upstream_connect_timeout_s,
            upstream_read_timeout_s=self.upstream_read_timeout_s,
            upstream_max_connections=self.upstream_max_connections,
            abort_timeout_s=self.abort_timeout_s,
        )

    def policy_knobs(self) -> dict[str, float]:
        """The policy knobs the operator set (None ones are left to the policy's default)."""
        knobs = {
            "high_watermark": self.high_watermark,
            "low_watermark": self.low_watermark,
            "decay_half_life_s": self.decay_half_life_s,
                    }
        return {name: value for name, value in knobs.items() if value is not None}

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, keys shown as ``**********`` when set."""
        data = self.model_dump(mode="json")
        for key in ("api_key", "admin_key"):
            if data.get(key) is not None:
                data[key] = "**********"
        return data


@contextmanager
def _toml(config_file: Path | None) -> Iterator[None]:
    token = _TOML_FILE.set(config_file)
    try:
        yield
    finally:
        _TOML_FILE.reset(token)


def _describe(error: Mapping[str, Any], config_file: Path | None) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    field = loc[0] if loc else ""
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        where = f"in {config_file}" if config_file else "given"
        return f"{field}: unknown setting {where}"
    if not field:
        return msg
    got = error.get("input")
    suffix = "" if isinstance(got, Mapping) or got is None else f" (got {got!r:.80})"
    if "SecretStr" in repr(type(got)) or field in ("api_key", "admin_key"):
        suffix = ""
    names = setting_names(field, loc[1]) if field == "tools" and len(loc) > 1 else \
        setting_names(field)
    return f"{names}: {msg}{suffix}"


def load_settings(
    flags: Mapping[str, Any] | None = None, config_file: Path | str | None = None
) -> ServiceSettings:
    """Settings from ``flags`` (highest), ``THUNDER_*`` env vars, ``config_file``, defaults."""
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise SettingsError([f"--config: no such file: {path}"])
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    try:
        with _toml(path):
            return ServiceSettings(**given)
    except ValidationError as exc:
        raise SettingsError([_describe(e, path) for e in exc.errors()]) from None
    except ValueError as exc:  # a TOML syntax error
        raise SettingsError([f"--config {path}: {exc}"]) from None
