"""The real-time shell around the pure engine model: one asyncio task runs the engine.

Algorithm (one iteration of :meth:`EngineRunner.run`):

1. If the engine has no work, wait until a request is submitted.
2. ``result = engine.step(clock.now_s(), max_decode_steps=k)``: the engine advances its state
   and says how long the modelled GPU took (``result.duration_s``).
3. Sleep until the wall instant at which modelled time reaches the step's end, so modelled
   time runs ``time_scale`` times faster than wall time. Steps are laid end to end on a
   modelled timeline (the *cursor*): the next step starts where the last one ended, so small
   wake-up jitter (timers have ~1 ms resolution) is absorbed by a shorter next sleep. If the
   loop falls more than ``max_behind_wall_s`` behind the plan, it re-syncs the cursor to the
   clock; the skipped span is modelled GPU time lost to Python, counted as distortion.
4. Deliver the step's token progress and finished requests to the waiting HTTP handlers.

Fast-forward: ``k`` decode iterations are folded into one engine call so that one loop
iteration lasts at least ``min_step_wall_s`` of wall time (k is derived from the last measured
decode-iteration time); this bounds Python overhead at high time scales. A request arriving
during a folded step waits for it to end, exactly as a request arriving mid-iteration waits on
a GPU, only with a coarser iteration; ``min_step_wall_s`` bounds that extra wait.

Streaming handlers are woken on a request's first token and on its end at once, and in
between when at least ``stream_interval_tokens`` tokens are unsent (SGLang's
``--stream-interval``, default 1: ``output_streamer.py``, "send the first token at once, then
whenever at least stream_interval tokens are unsent") *and* at least ``stream_interval_wall_s``
of wall time passed since the last wake-up. The wall floor is ours: at a time scale of 20 a
decode iteration lasts a few wall milliseconds, and one socket write per request per iteration
would cost the event loop more than the engine does. Each wake-up is one write carrying every
unsent token; time to first token and end-to-end latency are never delayed by either interval.
One event per request, set at most once per engine step: no per-token futures or queues.

Event-loop lag: after each sleep the runner records how late it woke against the plan, and
the lost time of each re-sync (:class:`thunder_sim.server.lag.LagMonitor`). Lost time is idle
time the modelled GPU would not have had, so it distorts results; the monitor reports it and,
with ``auto_time_scale``, lowers the scale (the clock re-anchors, so modelled time stays
continuous).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from thunder_sim.clock import ScaledClock
from thunder_sim.engine.ledger import owner_of
from thunder_sim.engine.types import (
    EngineCounters,
    EngineRequest,
    FinishedRequest,
    LoadSnapshot,
    StepResult,
)
from thunder_sim.server.lag import LagMonitor

log = logging.getLogger("thunder_sim.server")


class EngineLike(Protocol):
    """The part of ``thunder_sim.engine.engine.Engine`` the shell uses."""

    counters: EngineCounters

    def submit(self, req: EngineRequest, now: float) -> None: ...
    def abort(self, rid: str, now: float) -> FinishedRequest | None: ...
    def step(self, now: float, max_decode_steps: int = 1) -> StepResult: ...
    def has_work(self) -> bool: ...
    def flush_cache(self) -> bool: ...
    def load(self) -> LoadSnapshot: ...


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    min_step_wall_s: float = 0.004       # fold decode steps up to this wall length (docstring)
    max_decode_steps: int = 64           # never fold more than this many decode iterations
    stream_interval_tokens: int = 1       # SGLang --stream-interval default (docstring)
    stream_interval_wall_s: float = 0.2   # and wake streaming handlers at most this often
    idle_poll_wall_s: float = 0.01       # retry period when the engine has work it cannot run
    max_behind_wall_s: float = 0.02      # lateness absorbed before re-syncing to wall time


@dataclass(slots=True, eq=False)
class Ticket:
    """One in-flight request as its HTTP handler sees it."""

    rid: str
    prompt_tokens: int
    max_new_tokens: int
    stream: bool
    submitted_model_s: float
    generated_tokens: int = 0
    first_token_model_s: float | None = None
    finished: FinishedRequest | None = None
    notified_tokens: int = 0          # generated tokens when the handler was last woken
    last_notify_wall_s: float = 0.0
    event: asyncio.Event = field(default_factory=asyncio.Event)


class DuplicateRidError(ValueError):
    pass


class EngineRunner:
    def __init__(
        self,
        engine: EngineLike,
        clock: ScaledClock,
        settings: RunnerSettings | None = None,
        lag: LagMonitor | None = None,
        on_finish: Callable[[Ticket, FinishedRequest], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings or RunnerSettings()
        self.lag = lag or LagMonitor(clock)
        self.on_finish = on_finish
        self._tickets: dict[str, Ticket] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._decode_iter_model_s = 0.0   # last measured modelled time of one decode iteration
        self.steps_total = 0
        self._busy = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="thunder-sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- requests ----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    def submit(
        self,
        rid: str,
        prompt_blocks: tuple[int, ...],
        prompt_tokens: int,
        max_new_tokens: int,
        *,
        stream: bool,
        priority: int = 0,
        session_id: str | None = None,
    ) -> Ticket:
        if rid in self._tickets:
            raise DuplicateRidError(f"Duplicate request ID: {rid} is already running")
        now = self.clock.now_s()
        ticket = Ticket(rid, prompt_tokens, max_new_tokens, stream, now)
        self.engine.submit(
            EngineRequest(
                rid=rid,
                prompt_blocks=prompt_blocks,
                prompt_tokens=prompt_tokens,
                max_new_tokens=max_new_tokens,
                priority=priority,
                session_id=session_id,
                arrival_s=now,
                owner=owner_of(rid),
            ),
            now,
        )
        self._tickets[rid] = ticket
        self._wake.set()
        return ticket

    def abort(self, rid: str) -> bool:
        """Abort one request; True if it was in flight."""
        ticket = self._tickets.get(rid)
        if ticket is None:
            return False
        finished = self.engine.abort(rid, self.clock.now_s())
        if finished is not None:
            self._finish(ticket, finished)
        return True

    def abort_all(self) -> int:
        rids = list(self._tickets)
        return sum(self.abort(rid) for rid in rids)

    def flush_cache(self) -> bool:
        """Flush the prefix cache; refused (False) while requests run, as in SGLang."""
        if self._tickets or self.engine.has_work():
            return False
        return self.engine.flush_cache()

    # -- the loop ----------------------------------------------------------------------------
    def _fold(self) -> int:
        if self._decode_iter_model_s <= 0:
            return 1
        budget_model_s = self.settings.min_step_wall_s * self.clock.time_scale
        k = math.floor(budget_model_s / self._decode_iter_model_s)
        return max(1, min(self.settings.max_decode_steps, k))

    async def run(self) -> None:
        clock = self.clock
        cursor_s = 0.0  # modelled instant the last step ended (the plan)
        while True:
            if not self.engine.has_work():
                self._wake.clear()
                await self._wake.wait()
                continue
            now_s = clock.now_s()
            behind_wall_s = clock.to_wall_s(now_s - cursor_s)
            if behind_wall_s > self.settings.max_behind_wall_s:
                # idle before, or the loop fell too far behind: resume from wall time; while
                # busy, that gap is modelled GPU time lost to Python (the distortion)
                lost_wall_s = behind_wall_s if self._busy else 0.0
                cursor_s = now_s
            else:
                lost_wall_s = 0.0  # small lateness is absorbed: the next sleep is shorter
            result = self.engine.step(cursor_s, max_decode_steps=self._fold())
            self.steps_total += 1
            if result.duration_s <= 0 and not result.progress and not result.finished:
                # work the engine cannot run now (e.g. waiting for KV): retry shortly
                self._busy = False
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.idle_poll_wall_s)
                continue
            self._busy = True
            cursor_s += result.duration_s
            target_wall = clock.wall_at(cursor_s)
            delay = target_wall - clock.wall_s()
            await asyncio.sleep(delay if delay > 0 else 0)
            self.lag.record(clock.wall_s() - target_wall, clock.to_wall_s(result.duration_s),
                            lost_wall_s)
            self._learn_decode_time(result)
            self._deliver(result)
            if not self.engine.has_work():
                self._busy = False

    def _learn_decode_time(self, result: StepResult) -> None:
        if result.prefill_tokens or not result.decode_tokens or not result.progress:
            return
        # one token per request means one iteration; else the longest request's count
        iterations = 1 if result.decode_tokens == len(result.progress) else max(
            p.new_tokens for p in result.progress)
        if iterations > 0:
            self._decode_iter_model_s = result.duration_s / iterations

    def _deliver(self, result: StepResult) -> None:
        wall = self.clock.wall_s()
        interval_wall_s = self.settings.stream_interval_wall_s
        interval_tokens = self.settings.stream_interval_tokens
        tickets = self._tickets
        for p in result.progress:
            t = tickets.get(p.rid)
            if t is None:
                continue
            t.generated_tokens += p.new_tokens
            if p.first:
                t.first_token_model_s = self.clock.now_s()
            if t.stream and (t.notified_tokens == 0 or (
                    t.generated_tokens - t.notified_tokens >= interval_tokens
                    and wall - t.last_notify_wall_s >= interval_wall_s)):
                t.notified_tokens = t.generated_tokens
                t.last_notify_wall_s = wall
                t.event.set()
        for f in result.finished:
            t = tickets.get(f.rid)
            if t is not None:
                self._finish(t, f)

    def _finish(self, ticket: Ticket, finished: FinishedRequest) -> None:
        self._tickets.pop(ticket.rid, None)
        ticket.finished = finished
        ticket.generated_tokens = finished.completion_tokens
        ticket.event.set()
        if self.on_finish is not None:
            try:
                self.on_finish(ticket, finished)
            except Exception:  # metrics must never stop the engine loop
                log.exception("on_finish hook failed for %s", ticket.rid)
