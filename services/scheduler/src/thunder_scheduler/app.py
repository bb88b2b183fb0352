"""The app factory: ``create_app(settings)`` wires the service's parts; no module-level state.

Parts, created here and started / stopped by the FastAPI lifespan:

* the backends (``--backend`` specs through ``backends.registry``, or injected), sharing one
  control-plane ``httpx.AsyncClient`` (injected or owned);
* the ``BackendMonitor`` (probe with backoff, load polling), whose health changes the driver
  feeds to the core as ``BackendUpdated``;
* the pure ``ProgramScheduler`` (policy from the settings) inside the async ``Driver``; with
  ``state_file``, wrapped in ``persistence.RecordingCore`` and restored from the file before
  anything else starts, its changes written behind by ``persistence.StatePersister``;
* the ``SchedulerGate`` the proxy calls, and the proxy's upstream client;
* the tool manager, when ``tools_enabled``: started (reconcile) and closed (teardown) by the
  lifespan, its metrics on the app's registry, told by the driver when programs queue, are
  admitted, restore and end (``driver.ProgramHooks``).

Routes: the proxy's OpenAI / SGLang routes (client key; included first, and their hot
``POST`` paths served ahead of FastAPI's middleware and route matching by
``proxy.fast_path.FastPathApp``), ops (``/health``, ``/ready``, ``/metrics``, open), lifecycle
(admin key), and the tool manager's (admin key, every one of them: exec runs commands) when
enabled.

Everything a test may want to reach is on ``app.state.thunder`` (a :class:`ServiceParts`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Depends, FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from thunder_core.contract import ProgramEndStatus
from thunder_scheduler.auth import KeyCheck, KeyFirstMiddleware, require_key
from thunder_scheduler.backends.base import Backend, BackendKind
from thunder_scheduler.backends.monitor import BackendMonitor, MonitorConfig
from thunder_scheduler.backends.registry import make_backend, parse_backend_spec
from thunder_scheduler.clock import Clock, MonotonicClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.errors import ServiceError, error_response, install_error_handlers
from thunder_scheduler.gate import SchedulerGate
from thunder_scheduler.lifecycle_api import (
    LIFECYCLE_PREFIXES,
    BodyLimitMiddleware,
    create_lifecycle_router,
)
from thunder_scheduler.live import create_live_router
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduler.openapi_doc import describe as describe_openapi
from thunder_scheduler.ops_api import create_ops_router
from thunder_scheduler.persistence import (
    RecordingCore,
    StatePersister,
    StateStore,
    StateStoreError,
)
from thunder_scheduler.proxy.fast_path import AdmitCheck, FastPathApp
from thunder_scheduler.proxy.routes import PROXY_PREFIXES, ProxyEndpoints
from thunder_scheduler.proxy.upstream import UpstreamClient, create_upstream_client
from thunder_scheduler.quota import ProgramQuota
from thunder_scheduler.rollout_api import create_rollout_router
from thunder_scheduler.router_api import ROUTER_PREFIXES, RouterApi, create_router_api
from thunder_scheduler.settings import ServiceSettings, SettingsError, setting_names
from thunder_scheduling.config import ConfigError, SchedulerConfig, UnknownKnob
from thunder_scheduling.events import ProgramEnded
from thunder_scheduling.registry import make_scheduler
from thunder_scheduling.scheduler import ProgramScheduler

if TYPE_CHECKING:
    from thunder_scheduler.tools.manager import ToolManager

__all__ = ["ServiceParts", "create_app"]

log = logging.getLogger(__name__)

CONTROL_PLANE_TIMEOUT_S = 10.0
"""Probe / load / lever calls to an engine: a healthy engine answers these in milliseconds;
10 s tolerates one stalled by a long prefill without hanging the monitor."""


POLICY_KNOB_NAMES = {"decay_half_life_s": "acting_half_life_s"}
"""Settings whose policy-config field is spelled differently (the user-facing name says what
the knob does: the half-life of an acting program's decaying weight)."""


@dataclass(slots=True)
class ServiceParts:
    """The wired parts of one app instance (``app.state.thunder``)."""

    settings: ServiceSettings
    backends: dict[str, Backend]
    monitor: BackendMonitor
    driver: Driver
    gate: SchedulerGate
    metrics: ServiceMetrics
    upstream: UpstreamClient
    tools: ToolManager | None
    state: StatePersister | None = None
    startup_failure: BaseException | None = None
    """Why the lifespan's start-up failed (``thunder-scheduler serve`` prints it as one line)."""


def backend_options(settings: ServiceSettings, kind: str) -> dict[str, Any]:
    """The settings a backend of ``kind`` is built with (engine flags it cannot probe)."""
    if kind == BackendKind.VLLM.value:
        return {
            "priority_scheduling": settings.vllm_priority_scheduling,
            "cached_tokens_in_usage": settings.vllm_cached_tokens_in_usage,
        }
    if kind == BackendKind.LLAMACPP.value and settings.llamacpp_slot_offload:
        return {"slot_store_ratio": settings.llamacpp_slot_store_ratio}
    return {}


def build_backends(settings: ServiceSettings, http: httpx.AsyncClient) -> list[Backend]:
    """One backend per ``--backend`` spec (already validated by the settings)."""
    backends: list[Backend] = []
    for text in settings.backends:
        spec = parse_backend_spec(text)
        backends.append(make_backend(
            spec.kind, spec.name, spec.url, http, **backend_options(settings, spec.kind)
        ))
    return backends


def _scheduler_config(settings: ServiceSettings) -> SchedulerConfig:
    overrides: dict[str, Any] = {"tick_s": settings.tick_s}
    if settings.lease_s is not None:
        overrides["lease_s"] = settings.lease_s
    if settings.max_paused_s is not None:
        overrides["max_paused_s"] = settings.max_paused_s
    return SchedulerConfig(**overrides)


def make_core(settings: ServiceSettings) -> ProgramScheduler:
    """The pure scheduler for ``settings.policy`` with the operator's knobs, built by
    ``thunder_scheduling.make_scheduler``.

    Raises :class:`SettingsError` naming the setting (flag and variable) for an unknown policy,
    a knob the policy does not have or a value it refuses.
    """
    chosen = settings.policy_knobs()
    setting_of = {POLICY_KNOB_NAMES.get(name, name): name for name in chosen}
    knobs = {core_name: chosen[name] for core_name, name in setting_of.items()}
    try:
        return make_scheduler(settings.policy, config=_scheduler_config(settings), **knobs)
    except UnknownKnob as exc:
        setting = setting_of.get(exc.knob or "", exc.knob or "policy")
        raise SettingsError([
            f"{setting_names(setting)}: the {settings.policy} policy has no such knob"
        ]) from None
    except ConfigError as exc:
        named = "policy" if exc.knob == "policy" else setting_of.get(exc.knob or "")
        raise SettingsError([f"{setting_names(named)}: {exc}" if named else str(exc)]) from None


def create_app(
    settings: ServiceSettings,
    *,
    backends: Sequence[Backend] | None = None,
    http: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """A new, independent service instance (its own registry, driver, monitor, clients)."""
    metrics = ServiceMetrics()
    clock = clock if clock is not None else MonotonicClock(settings.time_scale)
    owns_http = http is None
    control_http = http if http is not None else httpx.AsyncClient(
        timeout=httpx.Timeout(CONTROL_PLANE_TIMEOUT_S)
    )
    backend_list = list(backends) if backends is not None else build_backends(
        settings, control_http
    )
    by_name = {backend.name: backend for backend in backend_list}
    if len(by_name) != len(backend_list):
        raise ValueError("backend names must be unique (use NAME@KIND=URL)")
    plain_core = make_core(settings)
    state = _make_persister(settings, plain_core) if settings.state_file else None
    core: ProgramScheduler | RecordingCore = state.core if state is not None else plain_core
    monitor_ref: list[BackendMonitor] = []

    def total_slots(name: str) -> int | None:
        info = monitor_ref[0].state(name).info if monitor_ref else None
        value = info.raw.get("total_slots") if info is not None else None
        return value if isinstance(value, int) else None

    driver = Driver(
        core,
        by_name,
        clock,
        metrics,
        tick_s=settings.tick_s,
        prewarm_http=control_http,
        prewarm_bodies_max=settings.prewarm_bodies_max,
        slot_offload=settings.llamacpp_slot_offload,
        total_slots=total_slots,
        prompt_split=settings.prompt_split,
    )
    tools = _make_tool_manager(settings, driver, metrics)
    driver.hooks = tools
    defaults = MonitorConfig()
    monitor = BackendMonitor(
        backend_list,
        MonitorConfig(
            poll_interval_s=settings.monitor_interval_s,
            unhealthy_after_failures=settings.monitor_unhealthy_after_failures,
            backoff_initial_s=min(defaults.backoff_initial_s, settings.monitor_backoff_max_s),
            backoff_max_s=settings.monitor_backoff_max_s,
        ),
        on_change=driver.on_backend_change,
    )
    monitor_ref.append(monitor)
    gate = SchedulerGate(driver, monitor, metrics, prompt_block_tokens=core.prompt_block_tokens)
    proxy_settings = settings.proxy_settings()
    upstream = create_upstream_client(proxy_settings)
    parts = ServiceParts(settings, by_name, monitor, driver, gate, metrics, upstream, tools,
                         state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if state is not None:  # before the driver, the monitor and the tools' reconcile
                for restored in state.restore(clock.now()):
                    if restored.tools:  # open tool calls can be ended after the restart
                        driver.programs.ensure(restored.program_id).tool_calls.update(
                            t.call_id for t in restored.tools)
                state.start()
            driver.start()
            monitor.start()
            if tools is not None:
                await tools.start()
        except Exception as exc:
            parts.startup_failure = exc
            await monitor.aclose()
            await driver.aclose()
            raise
        log.info(
            "thunder-scheduler: policy %s, backends %s",
            settings.policy, ", ".join(by_name) or "none",
        )
        try:
            yield
        finally:
            await monitor.aclose()
            await driver.aclose()
            if state is not None:
                await state.aclose()
            if tools is not None:
                await tools.close()
            await upstream.aclose()
            for backend in list(driver.backends.values()):  # incl. workers added at run time
                try:
                    await backend.aclose()
                except Exception:
                    log.exception("closing backend %s failed", backend.name)
            if owns_http:
                await control_http.aclose()

    app = FastPathApp(
        title="Thunder scheduler",
        summary="Program-aware OpenAI / SGLang-compatible proxy and scheduler",
        lifespan=lifespan,
    )
    app.state.thunder = parts
    install_error_handlers(app)
    describe_openapi(app, client_key=settings.api_key is not None,
                      admin_key=settings.admin_key is not None)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    require_admin = require_key(_secret(settings.admin_key), "admin")
    client_key = _secret(settings.api_key)
    key_rules: list[tuple[tuple[str, ...], KeyCheck]] = [
        (LIFECYCLE_PREFIXES, require_admin), (ROUTER_PREFIXES, require_admin)]
    if client_key is not None:
        key_rules.append((PROXY_PREFIXES, require_key(client_key, "api")))
    app.add_middleware(KeyFirstMiddleware, rules=key_rules)  # outermost: before any body read
    quota = ProgramQuota(driver.core.has_program, settings.max_live_programs,
                         settings.max_live_programs_per_key)

    by_name = driver.backends  # from here on: incl. workers added through the router API

    def alternates(failed: str) -> list[Backend]:
        return [by_name[name] for name in monitor.healthy_names()
                if name != failed and name in by_name]

    def model_backends(model: str) -> list[Backend]:
        serving = []
        for name in monitor.healthy_names():
            info = monitor.state(name).info
            if info is not None and model in info.models and name in by_name:
                serving.append(by_name[name])
        return serving

    def refused_first(program_id: str, reason: str) -> None:
        if driver.core.has_program(program_id):
            driver.feed(ProgramEnded(at=driver.now(), program_id=program_id,
                                     status=ProgramEndStatus.ERROR, reason=reason))

    proxy = ProxyEndpoints(gate, upstream, proxy_settings, quota, alternates, model_backends,
                           refused_first)
    # the proxy's routes first: the hot paths match before the ops / lifecycle / tools ones.
    if client_key is None:
        app.include_router(proxy.router())
        app.serve_proxy_first(proxy)
    else:
        require_client = require_key(client_key, "api")
        app.include_router(proxy.router(), dependencies=[Depends(require_client)])
        app.serve_proxy_first(proxy, _admit_with(require_client))
    app.include_router(create_router_api(RouterApi(
        monitor, driver, control_http, lambda kind: backend_options(settings, kind))))
    app.include_router(create_ops_router(lambda: monitor, lambda: driver, metrics))
    app.include_router(create_live_router(lambda: driver, lambda: monitor, require_admin))
    app.include_router(create_lifecycle_router(
        lambda: driver, require_admin, quota=quota, max_lease_s=settings.max_lease_s,
        max_tags_bytes=settings.max_tags_bytes,
    ))
    app.include_router(create_rollout_router(lambda: driver, require_admin))
    if tools is not None:
        from thunder_scheduler.tools.api import create_tools_router

        # every runtime endpoint runs commands in sandboxes: all of them need the admin key
        app.include_router(
            create_tools_router(lambda: tools, require_admin),
            dependencies=[Depends(require_admin)],
        )
    return app


def _make_persister(settings: ServiceSettings, core: ProgramScheduler) -> StatePersister:
    """The program table's store (``--state-file``); a file it cannot use is a settings error."""
    assert settings.state_file is not None
    try:
        store = StateStore(settings.state_file)
    except StateStoreError as exc:
        raise SettingsError([f"{setting_names('state_file')}: {exc}"]) from None
    return StatePersister(store, RecordingCore(core),
                          flush_interval_s=settings.state_flush_interval_s)


def _admit_with(check: KeyCheck) -> AdmitCheck:
    """The fast path's key check: the FastAPI dependency's check and error body, as ASGI."""

    async def admit(scope: Scope, receive: Receive) -> Response | None:
        try:
            await check(Request(scope, receive))
        except ServiceError as exc:
            log.info("%s %s -> %d %s", scope["method"], scope["path"], exc.status, exc.reason)
            return error_response(exc.status, exc.reason, exc.detail, headers=exc.headers)
        return None

    return admit


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _make_tool_manager(
    settings: ServiceSettings, driver: Driver, metrics: ServiceMetrics
) -> ToolManager | None:
    if not settings.tools_enabled:
        return None
    from thunder_scheduler.tools.manager import ToolManager
    from thunder_scheduler.tools.registry import make_backend as make_runtime_backend

    manager = ToolManager(
        settings.tools,
        make_runtime_backend(settings.tools),
        known_programs=driver.live_program_ids,
        program_exists=driver.core.has_program,
        on_runtime_acquired=lambda program_id, view: driver.note_runtime(
            program_id, view.runtime_id
        ),
    )
    manager.register_metrics(metrics.registry)
    return manager
