"""Live mode: replay programs over real HTTP against any OpenAI/SGLang-compatible URL.

A closed loop of ``concurrency`` programs (subagents run as child programs, concurrently when
spawned together; the parent waits). Each program walks ``player.plan`` in accelerated time:
waits are ``trace seconds / time_scale`` of wall time, and every measured wall duration is
multiplied back by ``time_scale``, so reports are in modelled seconds. Pass the same
``--time-scale`` to the simulated engines and to the scheduler service.

Wire, per step: ``POST {target}/v1/chat/completions`` with ``stream: true`` and
``stream_options.include_usage``, ``max_tokens`` = the step's output tokens, the program id as
our header ``X-Thunder-Program-Id`` and as ThunderAgent's body ``program_id``, and the step's
prompt as the simulator's ``thunder_trace`` extension (block keys + exact prompt tokens).
TTFT is the first chunk with content; usage (``prompt_tokens_details.cached_tokens``) comes
from the final chunk.

The model is the first one the target's ``GET /v1/models`` lists unless ``--model`` names one.
Time scale: a simulated engine's own scale (``thunder_sim_time_scale`` on ``/server_info``,
read from ``engine_urls`` and the target) replaces the configured one at start and is polled
every second; when ``--auto-time-scale`` lowers it the replay's clock re-anchors (reported as
a warning: a scheduler keeps the scale it was started with).

Lifecycle: when the target has the scheduler's lifecycle API (``GET /v1/programs`` answers
200; an unreachable target or 401/403 is an error; ``--lifecycle on|off`` forces it),
programs are started (with their parent), tool calls
are reported around each tool gap, and programs are ended through it; with
``--thunderagent-release`` the replay also calls ThunderAgent's ``POST /programs/release``.

Instrument health: a monitor task measures this process's event-loop lag (how late a 20 ms
sleep wakes); the engines' own lag is read from their ``/metrics``
(``thunder_sim_event_loop_lag_fraction``, ``thunder_sim_lost_step_wall_seconds``). The report
warns when either would distort results: replay lag p99 above 5% of the median modelled step
latency, or engines that lost more than 10% of their planned step time.

Recompute ledger: the replay sees neither evictions nor the scheduler's pauses, so the report
carries the engines' own ledger (``extra["engine_miss_tokens"]``: every admission's missed
prompt tokens by cause, the delta of ``thunder_sim_prompt_miss_tokens_total{cause}`` over the
run) with what one engine knows alone: ``first_sight`` includes blocks cached on another
engine, ``evicted_away`` is acting or paused (``thunder_sim.engine.ledger``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from thunder_core.contract import (
    PROGRAM_ID_FIELD,
    PROGRAM_ID_HEADER,
    TRACE_FIELD,
    Paths,
    ProgramEnd,
    ProgramStart,
    ToolEnd,
    ToolStart,
    TraceFields,
)
from thunder_sim.replay.metrics import RunRecorder, RunReport, StepRecord, percentile, summarise
from thunder_sim.replay.player import Call, GapPolicy, Spawn, ToolBegin, Wait, plan
from thunder_sim.replay.player import ToolEnd as ToolEndAction
from thunder_sim.replay.trace import GapKind, TraceProgram, TraceStep, ideal_hit_tokens, instantiate

LAG_PROBE_S = 0.02
MAX_REPLAY_LAG_FRACTION = 0.05
MAX_ENGINE_LOST_FRACTION = 0.10
SCALE_POLL_WALL_S = 1.0
"""How often the engines' effective time scale is read back (wall seconds; the engines'
lag monitor decides over 3 windows of 1 s, ``thunder_sim.server.lag``)."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    target: str
    time_scale: float = 1.0
    concurrency: int = 8
    gaps: GapPolicy = field(default_factory=GapPolicy)
    lifecycle: str = "auto"               # auto | on | off
    thunderagent_release: bool = False
    model: str | None = None              # None: the first id of the target's /v1/models
    duration_s: float | None = None       # modelled seconds; recycles sessions
    request_timeout_s: float = 3600.0     # wall
    engine_urls: tuple[str, ...] = ()     # simulated engines behind the target, for /metrics
    policy: str = "target"                # what the target runs (for the report)
    message_chars_per_token: float = 0.0  # 0: a fixed placeholder message (see _message)
    replicas: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        if not self.target.startswith(("http://", "https://")):
            raise ValueError(f"--target must be an http(s) URL, got {self.target!r}")
        if self.time_scale <= 0:
            raise ValueError(f"--time-scale must be positive, got {self.time_scale}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.lifecycle not in ("auto", "on", "off"):
            raise ValueError(f"--lifecycle must be auto, on or off, got {self.lifecycle!r}")
        if not math.isfinite(self.message_chars_per_token) or self.message_chars_per_token < 0:
            raise ValueError(f"--message-chars-per-token must be >= 0, got "
                             f"{self.message_chars_per_token}")


_METRIC_RE = re.compile(
    r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfINFaN]+)$", re.M)
_CAUSE_RE = re.compile(r'cause="([^"]*)"')
MISS_METRIC = "thunder_sim_prompt_miss_tokens_total"


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of each Prometheus series by name (labels folded); the engines' recompute ledger
    (``thunder_sim_prompt_miss_tokens_total{cause=...}``) also per cause, as
    ``<name>/<cause>``."""
    out: dict[str, float] = {}
    for name, labels, value in _METRIC_RE.findall(text):
        try:
            v = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + v
        if name == MISS_METRIC and (m := _CAUSE_RE.search(labels)):
            key = f"{name}/{m.group(1)}"
            out[key] = out.get(key, 0.0) + v
    return out


class LiveReplay:
    def __init__(
        self, programs: Sequence[TraceProgram], config: LiveConfig, *, fit: str = "",
        on_step: Callable[[], None] | None = None,
    ) -> None:
        if not programs:
            raise ValueError("no sessions to replay (check the context filter)")
        self.config = config
        self.fit = fit
        self.recorder = RunRecorder()
        self._sessions = list(programs)
        self._next = 0
        self._played: list[TraceProgram] = []
        self._on_step = on_step
        self._t0 = 0.0
        self._lags: list[float] = []
        self._lifecycle = False
        self._scale = config.time_scale
        self._anchor_wall = 0.0
        self._anchor_model = 0.0
        self._scale_changes: list[tuple[float, float, float]] = []
        self._model = config.model or ""
        self._http: aiohttp.ClientSession | None = None
        self._base = config.target.rstrip("/").removesuffix("/v1")

    def now(self) -> float:
        """Modelled seconds since the run started (piecewise: the scale may drop mid-run)."""
        return self._anchor_model + (time.monotonic() - self._anchor_wall) * self._scale

    def _wall(self, modelled_s: float) -> float:
        return modelled_s / self._scale

    def _set_scale(self, scale: float) -> None:
        """Re-anchor the modelled clock at ``scale`` (as the engines' clocks do)."""
        if scale == self._scale:
            return
        if self._t0:
            now = self.now()
            self._anchor_wall, self._anchor_model = time.monotonic(), now
        self._scale_changes.append((self.now() if self._t0 else 0.0, self._scale, scale))
        self._scale = scale

    async def _engine_scale(self) -> float | None:
        """The engines' effective time scale (``thunder_sim_time_scale`` on ``/server_info``),
        the slowest when they differ; None when no engine reports one."""
        assert self._http is not None
        scales: list[float] = []
        for url in (*self.config.engine_urls, self._base):
            try:
                async with self._http.get(f"{url.rstrip('/')}/server_info") as resp:
                    info = orjson.loads(await resp.read()) if resp.status == 200 else {}
            except (aiohttp.ClientError, orjson.JSONDecodeError):
                continue
            value = info.get("thunder_sim_time_scale") if isinstance(info, dict) else None
            if isinstance(value, (int, float)) and value > 0:
                scales.append(float(value))
        return min(scales) if scales else None

    async def _follow_scale(self) -> None:
        """Poll the engines' scale (``--auto-time-scale`` lowers it under lag) and follow it."""
        while True:
            await asyncio.sleep(SCALE_POLL_WALL_S)
            scale = await self._engine_scale()
            if scale is not None and scale < self._scale:
                self._set_scale(scale)

    # -- run ------------------------------------------------------------------------------

    async def run(self) -> RunReport:
        cfg = self.config
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            self._http = http
            self._lifecycle = await self._detect_lifecycle()
            self._model = cfg.model or await self._detect_model()
            engine_scale = await self._engine_scale()
            if engine_scale is not None:
                self._set_scale(engine_scale)
            before = await self._scrape_engines()
            self._t0 = self._anchor_wall = time.monotonic()
            monitor = asyncio.create_task(self._monitor_lag())
            follower = asyncio.create_task(self._follow_scale())
            try:
                workers = [asyncio.create_task(self._worker()) for _ in range(cfg.concurrency)]
                if cfg.duration_s is not None:
                    pending = set(workers)
                    while pending and self.now() < cfg.duration_s:
                        _, pending = await asyncio.wait(
                            pending, timeout=self._wall(cfg.duration_s - self.now()))
                    for w in pending:
                        w.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                else:
                    await asyncio.gather(*workers)
                finish = self.now()
                if cfg.duration_s is not None:
                    finish = min(finish, cfg.duration_s)
            finally:
                monitor.cancel()
                follower.cancel()
                await asyncio.gather(monitor, follower, return_exceptions=True)
            after = await self._scrape_engines()
            measures = await self._pause_measures() if self._lifecycle else None
        self.recorder.close(finish)
        if measures is not None:
            self._service_pauses = measures
        return self._report(finish, before, after)

    async def _worker(self) -> None:
        while True:
            program = self._take()
            if program is None:
                return
            await self._play(program, None)

    def _take(self) -> TraceProgram | None:
        n = self._next
        if n < len(self._sessions):
            program = self._sessions[n]
        elif self.config.duration_s is not None:
            program = instantiate(self._sessions[n % len(self._sessions)], 1 + n,
                                  f".r{n // len(self._sessions)}")
        else:
            return None
        self._next += 1
        self._played.append(program)
        return program

    # -- one program ----------------------------------------------------------------------

    async def _play(self, program: TraceProgram, parent: str | None) -> None:
        pid = program.program_id
        self.recorder.programs_started += 1
        if self._lifecycle:
            body = ProgramStart(program_id=pid, framework="replay", parent_program_id=parent,
                                lease_s=86_400.0)
            await self._post(Paths.PROGRAMS, body.model_dump(exclude_none=True))
        for action in plan(program, self.config.gaps):
            if isinstance(action, Call):
                await self._call(pid, action.step)
            elif isinstance(action, Wait):
                capped = action.trace_s - action.duration_s
                if action.kind is GapKind.HUMAN:
                    self.recorder.capped_human_s += capped
                else:
                    self.recorder.capped_tool_s += capped
                if action.duration_s > 0:
                    await asyncio.sleep(self._wall(action.duration_s))
            elif isinstance(action, ToolBegin):
                if self._lifecycle:
                    tool = ToolStart(call_id=action.call_id, tool_name=action.tool_name)
                    await self._post(Paths.TOOLS.format(program_id=pid),
                                     tool.model_dump(exclude_none=True))
            elif isinstance(action, ToolEndAction):
                if self._lifecycle:
                    path = Paths.TOOL_END.format(program_id=pid, call_id=action.call_id)
                    await self._post(path, ToolEnd().model_dump(mode="json", exclude_none=True))
            elif isinstance(action, Spawn):
                await asyncio.gather(*(self._play(c, pid) for c in action.children))
        if self._lifecycle:
            await self._post(Paths.PROGRAM_END.format(program_id=pid),
                             ProgramEnd().model_dump(mode="json", exclude_none=True))
        if self.config.thunderagent_release:
            await self._post(Paths.THUNDERAGENT_RELEASE, {PROGRAM_ID_FIELD: pid})
        self.recorder.programs_done += 1

    def _message(self, prompt_tokens: int) -> str:
        """The user message: a placeholder, since the engine reads the prompt from the trace
        extension; with ``message_chars_per_token`` it is padded to that many characters per
        prompt token, so a proxy that estimates tokens from the size of the body
        (ThunderAgent: ``len(json.dumps(payload)) / chars_per_token``) sees the size real text
        of that length would have (about 4 characters per token for English and code)."""
        n = round(self.config.message_chars_per_token * prompt_tokens)
        return "(trace replay)" if n <= 0 else ("trace replay " * (n // 13 + 1))[:n]

    async def _call(self, pid: str, step: TraceStep) -> None:
        assert self._http is not None
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": "user", "content": self._message(step.prompt_tokens)}],
            "max_tokens": step.output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            PROGRAM_ID_FIELD: pid,
            TRACE_FIELD: {TraceFields.HASH_IDS: list(step.blocks),
                          TraceFields.PROMPT_TOKENS: step.prompt_tokens,
                          TraceFields.SESSION: "replay", TraceFields.BLOCK_TOKENS: 64},
        }
        sent = self.now()
        first: float | None = None
        usage: dict[str, Any] | None = None
        try:
            async with self._http.post(
                f"{self._base}/v1/chat/completions", data=orjson.dumps(body),
                headers={PROGRAM_ID_HEADER: pid, "Content-Type": "application/json"},
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = orjson.loads(data)
                    if first is None and any(
                        (c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()
                    ):
                        first = self.now()
                    if chunk.get("usage"):
                        usage = chunk["usage"]
        except (aiohttp.ClientError, RuntimeError, TimeoutError, orjson.JSONDecodeError) as exc:
            self.recorder.failed_steps += 1
            self._last_error = f"{pid} step {step.index}: {exc}"
            return
        finished = self.now()
        if usage is None:
            self.recorder.failed_steps += 1
            self._last_error = f"{pid} step {step.index}: stream ended without usage"
            return
        details = usage.get("prompt_tokens_details") or {}
        self.recorder.steps.append(StepRecord(
            pid, step.index, sent, first, finished, int(usage.get("prompt_tokens") or 0),
            int(details.get("cached_tokens") or 0), int(usage.get("completion_tokens") or 0)))
        if self._on_step is not None:
            self._on_step()

    # -- lifecycle and metrics ------------------------------------------------------------

    async def _detect_lifecycle(self) -> bool:
        mode = self.config.lifecycle
        if mode != "auto":
            return mode == "on"
        assert self._http is not None
        url = f"{self._base}{Paths.PROGRAMS}"
        try:
            async with self._http.get(url) as resp:
                status = resp.status
        except aiohttp.ClientError as exc:
            raise RuntimeError(f"target not reachable: GET {url}: {exc}") from exc
        if status in (401, 403):
            raise RuntimeError(
                f"GET {url} answered HTTP {status}: the lifecycle API needs the admin key; "
                "pass --lifecycle off to replay without it")
        return status == 200

    async def _detect_model(self) -> str:
        """The first model the target serves (``GET /v1/models``), as an OpenAI client would."""
        assert self._http is not None
        url = f"{self._base}/v1/models"
        try:
            async with self._http.get(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url} answered HTTP {resp.status}: {body[:200]!r}")
            models = orjson.loads(body).get("data") or []
        except (aiohttp.ClientError, orjson.JSONDecodeError, AttributeError) as exc:
            raise RuntimeError(f"GET {url} failed ({exc}): pass --model") from exc
        if not models or not isinstance(models[0], dict) or not models[0].get("id"):
            raise RuntimeError(f"{url} lists no model: pass --model")
        return str(models[0]["id"])

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        assert self._http is not None
        try:
            async with self._http.post(f"{self._base}{path}", json=body) as resp:
                if resp.status >= 400:
                    self._lifecycle_error(f"POST {path}: HTTP {resp.status} {await resp.text()}")
        except aiohttp.ClientError as exc:
            self._lifecycle_error(f"POST {path}: {exc}")

    def _lifecycle_error(self, message: str) -> None:
        self._lifecycle_errors += 1
        self._first_error = self._first_error or message
        self._last_error = message

    _lifecycle_errors = 0
    _first_error: str | None = None
    _last_error: str | None = None

    _service_pauses: tuple[float, float] | None = None
    """The scheduler's longest pause and largest paused share (``_pause_measures``)."""

    async def _pause_measures(self) -> tuple[float, float] | None:
        """The longest single pause and the largest share of a life spent paused, over every
        program in the scheduler's table (modelled seconds; the replay does not see pauses
        itself in live mode), as virtual mode reports them: ``max_paused_s`` /
        ``max_paused_share``."""
        assert self._http is not None
        try:
            async with self._http.get(f"{self._base}/v1/programs") as resp:
                if resp.status != 200:
                    return None
                rows = (await resp.json()).get("programs", [])
        except (aiohttp.ClientError, ValueError):
            return None
        return (max((float(row.get("longest_pause_s", 0.0)) for row in rows), default=0.0),
                max((float(row.get("paused_share", 0.0)) for row in rows), default=0.0))

    async def _scrape(self, url: str) -> dict[str, float]:
        assert self._http is not None
        try:
            async with self._http.get(f"{url.rstrip('/')}/metrics") as resp:
                return parse_metrics(await resp.text()) if resp.status == 200 else {}
        except aiohttp.ClientError:
            return {}

    async def _scrape_engines(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for metrics in await asyncio.gather(
                *(self._scrape(u) for u in (*self.config.engine_urls, self._base))):
            for k, v in metrics.items():
                total[k] = total.get(k, 0.0) + v
        return total

    async def _monitor_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            self._lags.append(max(0.0, loop.time() - start - LAG_PROBE_S))

    def _report(self, finish: float, before: dict[str, float], after: dict[str, float]
                ) -> RunReport:
        cfg = self.config

        def delta(name: str) -> float:
            # counters are exposed with a ``_total`` suffix by prometheus_client
            return sum(after.get(n, 0.0) - before.get(n, 0.0) for n in (name, f"{name}_total"))

        lag_p99 = percentile(self._lags, 99) if self._lags else 0.0
        lost = delta("thunder_sim_lost_step_wall_seconds")
        planned = delta("thunder_sim_planned_step_wall_seconds")
        report = summarise(
            self.recorder, label=cfg.label or f"{cfg.policy} x{cfg.concurrency}", mode="live",
            policy=cfg.policy, replicas=cfg.replicas, concurrency=cfg.concurrency,
            duration_s=finish, recomputed_tokens=int(delta("thunder_sim_recomputed_tokens")),
            ideal=ideal_hit_tokens(self._played), time_scale=self._scale, fit=self.fit,
            extra={
                "replay_loop_lag_p50_ms": 1000 * percentile(self._lags, 50) if self._lags else 0,
                "replay_loop_lag_p99_ms": 1000 * lag_p99,
                "engine_lost_fraction": lost / planned if planned else 0.0,
                "engine_lag_warnings": delta("thunder_sim_lag_warnings"),
                "lifecycle": self._lifecycle,
                "lifecycle_errors": self._lifecycle_errors,
                "first_error": self._first_error,
                "last_error": self._last_error,
                "scheduler_pauses": delta("thunder_pauses"),
                "scheduler_migrations": delta("thunder_migrations"),
                "engine_miss_tokens": {
                    k.split("/", 1)[1]: int(after[k] - before.get(k, 0.0))
                    for k in sorted(after) if k.startswith(f"{MISS_METRIC}/")},
            },
        )
        warnings = []
        median = report.step_latency_p50_s
        if not math.isnan(median) and lag_p99 * self._scale > MAX_REPLAY_LAG_FRACTION * median:
            warnings.append(
                f"replay event-loop lag p99 {1000 * lag_p99:.1f} ms wall = "
                f"{lag_p99 * self._scale:.2f} s modelled exceeds 5% of the median step "
                f"latency ({median:.2f} s): lower --time-scale")
        if planned and lost / planned > MAX_ENGINE_LOST_FRACTION:
            warnings.append(
                f"simulated engines lost {100 * lost / planned:.0f}% of their planned step time "
                "to event-loop lag: lower --time-scale")
        for at, old, new in self._scale_changes:
            warnings.append(
                f"time scale {old:g} -> {new:g} at {at:.0f} modelled s (the engines' "
                "--auto-time-scale); a scheduler started with --time-scale keeps its own")
        report.extra["warnings"] = warnings
        report.extra["time_scale_changes"] = self._scale_changes
        pauses, migrations = delta("thunder_pauses"), delta("thunder_migrations")
        changes: dict[str, Any] = {"max_paused_share": math.nan}    # pauses are not seen here
        if pauses or migrations:
            changes.update(pauses=int(pauses), migrations=int(migrations))
        if self._service_pauses is not None:
            changes["max_paused_s"], changes["max_paused_share"] = self._service_pauses
        return _with(report, **changes)


def _with(report: RunReport, **changes: Any) -> RunReport:
    from dataclasses import replace

    return replace(report, **changes)
