"""The request gate: the one door between the proxy data plane and the scheduler.

The proxy router (``thunder_scheduler.proxy``) calls, for every LLM request:

1. ``new_request_id(program_id, client_id)``: the engine request id: the client's own
   ``rid`` when it sent one that is free (``thunder_core.contract.CLIENT_RID_FIELD``), else
   ``<program>:<seq>``
   (``thunder_core.contract.engine_request_id``) or ``thunder-<32 hex digits>`` (128 random
   bits, as a UUID4 has 122, from ``os.urandom``: a sixth of ``uuid4().hex``'s cost) for an
   untagged request;
2. ``await acquire(...)``: feeds ``RequestArrived`` to the scheduling core and returns a
   :class:`Placement` once the core admits the request. While the core holds it (its program is
   paused, or not yet admitted) the call waits and never fails, except when the program is
   released meanwhile (409); no healthy backend is 503. The model name is the engine's to judge
   (the proxy passes it on; see ``proxy/routes.py``);
3. ``finish(...)``: feeds ``RequestFinished`` with the engine's usage, exactly once per acquired
   request, also when the client left while the request was held (``placement`` is then None);
4. ``report_upstream_failure(backend, reason)`` when forwarding to the placed backend failed
   to connect (or the connection broke): the backend monitor counts it like a failed poll, so
   a dead engine is marked unhealthy without waiting for the next poll.

A program's placement also carries the engine state its levers keep (``levers/``): its SGLang
session, opened before its first request there, or its llama.cpp slot.

What the gate reads from the body (prompt estimate, output limit, prompt fingerprint) is
``request_body.py``; the fingerprint is computed only when the gate is given the policy's block
size (``prompt_block_tokens``: set only for a policy that reads it), so the hot path of the
other policies pays nothing.

Untagged requests (no program id) never join a program: they are routed by the core's
``route_untagged`` and are not accounted per program (house style: no shared "default" program).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from thunder_core.contract import CLIENT_RID_MAX_LEN, engine_request_id
from thunder_scheduler.backends.base import Backend, RequestHints
from thunder_scheduler.request_body import analyse, estimate_prompt_tokens
from thunder_scheduling.events import (
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    RequestOutcome,
)

if TYPE_CHECKING:
    from thunder_scheduler.backends.monitor import BackendMonitor
    from thunder_scheduler.driver import Driver
    from thunder_scheduler.metrics import ServiceMetrics

__all__ = [
    "GateError",
    "Placement",
    "RequestGate",
    "SchedulerGate",
    "Usage",
]

_CLIENT_RID = re.compile(rf"[\x21-\x7e]{{1,{CLIENT_RID_MAX_LEN}}}\Z")
"""A client ``rid`` kept as the engine request id: printable ASCII without spaces (it travels
in the ``X-Thunder-Request-Id`` header and the engine's logs)."""

class GateError(Exception):
    """The gate refuses a request: ``status`` is the HTTP status, ``reason`` the JSON reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an admitted request goes, and how to decorate it for that engine."""

    backend: Backend
    hints: RequestHints
    placed_at: float = field(default_factory=time.perf_counter)
    """Wall time of the placement (``perf_counter``): the start of the backend latency."""


@dataclass(frozen=True, slots=True)
class Usage:
    """The engine's usage for one request (``cached_tokens`` None when not reported)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None


class RequestGate(Protocol):
    """What the proxy data plane needs from the control plane."""

    def new_request_id(self, program_id: str | None, client_id: str | None = None) -> str:
        """The client's free ``rid`` (``client_id``) if it sent one, else ``<program>:<seq>`` for
        a program's request, ``thunder-<32 hex>`` for an untagged one."""
        ...

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The documented pre-response estimate (see the module docstring)."""
        ...

    async def acquire(
        self,
        program_id: str | None,
        request_id: str,
        body: Mapping[str, Any],
        model: str | None,
    ) -> Placement:
        """Wait until the core admits the request; raises :class:`GateError` (404, 409, 503)."""
        ...

    def finish(
        self,
        placement: Placement | None,
        program_id: str | None,
        request_id: str,
        outcome: RequestOutcome,
        usage: Usage | None,
        ends_with_tool_call: bool,
        *,
        next_prefix: Mapping[str, Any] | None = None,
    ) -> None:
        """The request ended (exactly once per acquired request; also after a held disconnect).

        ``next_prefix``: when the response ended in tool calls, the next prompt's known prefix
        (a chat body, ``next_prompt``); the proxy passes it only to a gate whose
        ``prompt_split`` attribute is true."""
        ...

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        """Record the latency the proxy itself added to one request."""
        ...

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        """Forwarding to ``backend`` failed to connect or broke: count it against its health."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """OpenAI model objects: the union of the healthy backends' models."""
        ...


class SchedulerGate:
    """The :class:`RequestGate` of the live service: the driver's core, the monitor's health.

    Exactly-once ``finish``: a request id is remembered from the moment its ``RequestArrived`` is
    fed until its ``RequestFinished`` is; ``finish`` for an id it does not hold (never acquired,
    refused with 404/503, or finished already) feeds nothing.
    """

    def __init__(
        self,
        driver: Driver,
        monitor: BackendMonitor,
        metrics: ServiceMetrics,
        *,
        prompt_block_tokens: int | None = None,
        on_program_started: Callable[[str], None] | None = None,
    ) -> None:
        """``prompt_block_tokens``: the block size of the prompt fingerprint the policy reads
        (``SchedulingCore.prompt_block_tokens``); None: the policy reads none, send ``()``."""
        self._driver = driver
        self._monitor = monitor
        self._metrics = metrics
        self._on_program_started = on_program_started
        self._arrived: set[str] = set()
        self._block_tokens = prompt_block_tokens

    @property
    def prompt_split(self) -> bool:
        """Whether tool-call responses' next prefixes are wanted (the driver's setting)."""
        return self._driver.prompt_split_enabled

    def tracked(self) -> int:
        """Requests fed as arrived and not yet finished."""
        return len(self._arrived)

    def new_request_id(self, program_id: str | None, client_id: str | None = None) -> str:
        if (client_id and _CLIENT_RID.match(client_id)
                and client_id not in self._arrived):  # the client's rid, if usable and free
            if program_id is not None:
                self._driver.next_request_seq(program_id)  # its record, as for our own ids
            return client_id
        if program_id is None:
            return f"thunder-{os.urandom(16).hex()}"
        return engine_request_id(program_id, self._driver.next_request_seq(program_id))

    def estimate_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return estimate_prompt_tokens(body)

    def _healthy(self) -> list[str]:
        healthy = self._monitor.healthy_names()
        if not healthy:
            states = self._monitor.states()
            reasons = "; ".join(
                f"{name}: {state.last_error or 'not probed yet'}" for name, state in states.items()
            )
            raise GateError(503, f"no healthy backend ({reasons or 'none configured'})")
        return healthy

    def _served_models(self, names: list[str]) -> dict[str, list[str]]:
        served: dict[str, list[str]] = {}
        for name in names:
            info = self._monitor.state(name).info
            for model in info.models if info is not None else ():
                served.setdefault(model, []).append(name)
        return served

    async def acquire(
        self,
        program_id: str | None,
        request_id: str,
        body: Mapping[str, Any],
        model: str | None,
    ) -> Placement:
        driver = self._driver
        try:
            self._healthy()
        except GateError:
            if program_id is not None:
                driver.drop_unstarted(program_id)  # its request id made a record: drop it
            raise
        if program_id is None:
            name = driver.core.route_untagged(driver.now())
            if name is None or name not in driver.backends:
                raise GateError(503, "no backend can take the request now")
            return Placement(driver.backends[name], RequestHints(None, request_id))
        if not driver.core.has_program(program_id):
            # ThunderAgent and plain openai users send requests without a start event.
            driver.feed(ProgramStarted(at=driver.now(), program_id=program_id))
            if self._on_program_started is not None:
                self._on_program_started(program_id)
        facts = analyse(body, self._block_tokens)
        driver.remember_body(program_id, facts.path, body)
        event = RequestArrived(
            at=driver.now(),
            program_id=program_id,
            request_id=request_id,
            prompt_tokens_estimate=facts.prompt_tokens_estimate,
            max_output_tokens=facts.max_output_tokens,
            prompt_blocks=facts.prompt_blocks,
        )
        future = driver.arrive(program_id, request_id, event)
        self._arrived.add(request_id)
        held_since = time.perf_counter()
        try:
            admit = await future
        finally:
            driver.forget(request_id)
        self._metrics.observe_hold(time.perf_counter() - held_since)
        backend = driver.backends.get(admit.backend)
        if backend is None:  # the core named a backend we do not have: a bug, not the client's
            raise GateError(503, f"scheduler placed the request on unknown backend {admit.backend}")
        priority = admit.priority if admit.priority is not None else driver.priority_of(program_id)
        engine = await driver.engine_hints(program_id, backend)  # may open an SGLang session
        hints = RequestHints(
            program_id=program_id,
            request_id=request_id,
            priority=priority,
            session_id=engine.session_id,
            slot_id=engine.slot_id,
        )
        return Placement(backend, hints)

    def finish(
        self,
        placement: Placement | None,
        program_id: str | None,
        request_id: str,
        outcome: RequestOutcome,
        usage: Usage | None,
        ends_with_tool_call: bool,
        *,
        next_prefix: Mapping[str, Any] | None = None,
    ) -> None:
        self._metrics.count_request(outcome.value)
        if placement is not None:
            self._metrics.observe_backend_latency(
                placement.backend.name, time.perf_counter() - placement.placed_at
            )
        if usage is not None:
            self._metrics.observe_usage(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
            )
        if program_id is None or request_id not in self._arrived:
            return
        self._arrived.discard(request_id)
        self._driver.forget(request_id)
        if not self._driver.core.has_program(program_id):
            return  # released while the request ran or was held: nothing left to account
        self._driver.feed(RequestFinished(
            at=self._driver.now(),
            program_id=program_id,
            request_id=request_id,
            outcome=outcome,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            cached_tokens=usage.cached_tokens if usage is not None else None,
            ends_with_tool_call=ends_with_tool_call,
        ))
        if next_prefix is not None and outcome is RequestOutcome.OK:
            self._driver.prompt_split(
                program_id, next_prefix, usage.completion_tokens if usage is not None else 0)

    def observe_proxy_overhead(self, seconds: float, streaming: bool) -> None:
        self._metrics.observe_proxy_overhead(seconds, streaming)

    def report_upstream_failure(self, backend: str, reason: str) -> None:
        """Count a failed forward against ``backend`` (the monitor may mark it unhealthy)."""
        if backend not in self._driver.backends:
            return
        self._metrics.upstream_failures.labels(backend).inc()
        self._driver.spawn_task(
            "upstream_failure", self._monitor.report_failure(backend, reason)
        )

    def models(self) -> list[dict[str, Any]]:
        served = self._served_models(self._monitor.healthy_names())
        return [
            {"id": model, "object": "model", "created": 0, "owned_by": "thunder",
             "backends": sorted(names)}
            for model, names in sorted(served.items())
        ]
