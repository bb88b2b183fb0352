"""Backend health: probe at start-up with backoff, poll load, mark unhealthy, notify.

One asyncio task per backend runs a two-phase loop:

1. **Probe** until ``probe()`` succeeds. A failure (engine not up yet, or not telling
   its capacity) waits ``backoff_delay_s(attempt)`` and tries again, without blocking
   the other backends' tasks. Delay = ``min(backoff_max_s, backoff_initial_s *
   backoff_multiplier ** attempt)``, then multiplied by a jitter factor drawn
   uniformly from ``[1 - backoff_jitter, 1 + backoff_jitter]`` from the injected
   ``random.Random`` and capped again ("Exponential Backoff And Jitter", AWS
   Architecture Blog, 2015: jitter spreads the retries of many clients).
2. **Poll** ``load()`` every ``poll_interval_s``. A failure increments
   ``consecutive_failures``; at ``unhealthy_after_failures`` the backend is marked
   unhealthy and the task goes back to phase 1 (a restarted engine may come back with
   a different pool size, so capacity is re-probed). A success resets the count.

A backend is **healthy** only between a successful probe and the failure that ends
phase 2: before its first successful probe its capacity is unknown, and an unknown
capacity is never treated as infinite: such a backend is simply not placeable.

Subscribers (``on_change(name, state)``, async) are called when a backend's
``healthy`` flag or its ``info`` changes, so the scheduler can place programs
elsewhere; load updates are read with :meth:`BackendMonitor.state` instead. The
proxy can also report a failed forward (:meth:`BackendMonitor.report_failure`),
which counts like a failed poll.

Backends can join and leave at run time (:meth:`BackendMonitor.add`,
:meth:`BackendMonitor.remove`: the SGLang router's worker API). A removed backend's task stops
and it is reported unhealthy once (its programs are paused, not ended); its state stays
readable, and adding it again starts over from phase 1.

Time and randomness are injected (``sleep``, ``clock``, ``rng``), so the unit tests
drive every path with a manual clock and no real waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from thunder_scheduler.backends.base import Backend, BackendInfo, BackendLoad

__all__ = ["BackendMonitor", "BackendState", "MonitorConfig", "OnChange"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Knobs of :class:`BackendMonitor`; defaults are our choices, explained per field."""

    poll_interval_s: float = 1.0
    """Load poll period: SGLang's own load snapshot is refreshed every scheduler step,
    and a 1 s view is fresh enough for placement at agent-turn timescales (seconds)."""
    unhealthy_after_failures: int = 3
    """Consecutive failed polls before a backend is marked unhealthy: one slow answer
    during a long prefill must not evict a healthy engine's programs."""
    backoff_initial_s: float = 0.5
    """First retry delay of a backend that is not up: llama-server is up in < 1 s,
    SGLang/vLLM load weights for tens of seconds, so start small and grow."""
    backoff_multiplier: float = 2.0
    backoff_max_s: float = 30.0
    """Cap: a backend that comes up is noticed within 30 s (plus jitter)."""
    backoff_jitter: float = 0.2
    """Jitter fraction (+-20 %)."""

    def __post_init__(self) -> None:
        problems = []
        if self.poll_interval_s <= 0:
            problems.append(f"poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.unhealthy_after_failures < 1:
            problems.append(
                f"unhealthy_after_failures must be >= 1, got {self.unhealthy_after_failures}"
            )
        if self.backoff_initial_s <= 0:
            problems.append(f"backoff_initial_s must be > 0, got {self.backoff_initial_s}")
        if self.backoff_multiplier < 1:
            problems.append(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}")
        if self.backoff_max_s < self.backoff_initial_s:
            problems.append(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s "
                f"({self.backoff_initial_s})"
            )
        if not 0 <= self.backoff_jitter < 1:
            problems.append(f"backoff_jitter must be in [0, 1), got {self.backoff_jitter}")
        if problems:
            raise ValueError("; ".join(problems))

    def backoff_delay_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry number ``attempt`` (0-based)."""
        base = min(self.backoff_max_s, self.backoff_initial_s * self.backoff_multiplier**attempt)
        factor = 1.0 + self.backoff_jitter * (2.0 * rng.random() - 1.0)
        return min(self.backoff_max_s, base * factor)


@dataclass(frozen=True, slots=True)
class BackendState:
    """What the monitor knows about one backend."""

    name: str
    healthy: bool
    """Probed (finite capacity known) and fewer than N consecutive failures since."""
    info: BackendInfo | None
    """Last successful probe; None until the first one."""
    load: BackendLoad | None
    """Last successful load poll."""
    last_error: str | None
    consecutive_failures: int
    updated_at_s: float
    """Monitor clock reading of the last update."""


OnChange = Callable[[str, BackendState], Awaitable[None]]


class BackendMonitor:
    """Owns the health of a set of backends (see the module docstring)."""

    def __init__(
        self,
        backends: Sequence[Backend],
        config: MonitorConfig | None = None,
        *,
        on_change: OnChange | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        names = [b.name for b in backends]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate backend names: {', '.join(duplicates)}")
        self._backends = {b.name: b for b in backends}
        self._config = config or MonitorConfig()
        self._subscribers: list[OnChange] = [on_change] if on_change else []
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        now = clock()
        self._states = {
            name: BackendState(name, False, None, None, None, 0, now) for name in self._backends
        }
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._removed: set[str] = set()

    # --- observation -----------------------------------------------------------------

    def subscribe(self, on_change: OnChange) -> None:
        self._subscribers.append(on_change)

    def state(self, name: str) -> BackendState:
        try:
            return self._states[name]
        except KeyError:
            raise KeyError(f"unknown backend {name!r}; known: {', '.join(self._states)}") from None

    def states(self) -> dict[str, BackendState]:
        return dict(self._states)

    def healthy_names(self) -> list[str]:
        return [name for name, state in self._states.items() if state.healthy]

    def active_names(self) -> list[str]:
        """Backends being monitored (every one but those removed), healthy or not."""
        return [name for name in self._states if name not in self._removed]

    def backend(self, name: str) -> Backend:
        self.state(name)  # KeyError naming the known ones
        return self._backends[name]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start one monitoring task per backend; returns at once."""
        if self._started:
            raise RuntimeError("BackendMonitor already started")
        self._started = True
        for name in self.active_names():
            self._spawn(self._backends[name])

    def _spawn(self, backend: Backend) -> None:
        self._tasks[backend.name] = asyncio.create_task(
            self._run(backend), name=f"backend-monitor-{backend.name}")

    async def add(self, backend: Backend) -> None:
        """Monitor ``backend`` from now on (probe first). A removed backend of the same name is
        replaced; ``ValueError`` for a name that is being monitored."""
        name = backend.name
        if name in self._backends and name not in self._removed:
            raise ValueError(f"backend {name!r} is already monitored")
        self._backends[name] = backend
        self._removed.discard(name)
        self._states[name] = BackendState(name, False, None, None, None, 0, self._clock())
        if self._started:
            self._spawn(backend)

    async def remove(self, name: str) -> None:
        """Stop monitoring ``name`` and report it unhealthy (``KeyError`` if unknown)."""
        self.state(name)
        if name in self._removed:
            return
        self._removed.add(name)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._update(name, healthy=False, last_error="removed", consecutive_failures=0)

    async def aclose(self) -> None:
        """Stop the monitoring tasks (the backends themselves are closed by their owner)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the loop -----------------------------------------------------------------------

    async def _run(self, backend: Backend) -> None:
        while True:
            await self._probe_until_up(backend)
            await self._poll_until_down(backend)

    async def _probe_until_up(self, backend: Backend) -> None:
        attempt = 0
        while True:
            try:
                info = await backend.probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure, incl. a backend bug, is a failed probe
                await self._failed(backend.name, _describe(exc), may_mark_unhealthy=False)
                await self._sleep(self._config.backoff_delay_s(attempt, self._rng))
                attempt += 1
                continue
            await self._update(
                backend.name, healthy=True, info=info, last_error=None, consecutive_failures=0
            )
            return

    async def _poll_until_down(self, backend: Backend) -> None:
        while self._states[backend.name].healthy:
            await self._sleep(self._config.poll_interval_s)
            try:
                load = await backend.load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(backend.name, _describe(exc), may_mark_unhealthy=True)
                continue
            await self._update(backend.name, load=load, consecutive_failures=0)

    async def report_failure(self, name: str, reason: str) -> None:
        """The proxy could not reach ``name``: count it like a failed poll."""
        self.state(name)  # KeyError for an unknown name
        await self._failed(name, reason, may_mark_unhealthy=True)

    async def _failed(self, name: str, reason: str, *, may_mark_unhealthy: bool) -> None:
        state = self._states[name]
        failures = state.consecutive_failures + 1
        healthy = state.healthy
        if may_mark_unhealthy and failures >= self._config.unhealthy_after_failures:
            healthy = False
        if healthy != state.healthy:
            log.warning("backend %s marked unhealthy after %d failures: %s", name, failures, reason)
        await self._update(name, healthy=healthy, last_error=reason, consecutive_failures=failures)

    async def _update(self, name: str, **changes: object) -> None:
        old = self._states[name]
        new = replace(old, updated_at_s=self._clock(), **changes)  # type: ignore[arg-type]
        self._states[name] = new
        if new.healthy != old.healthy or new.info != old.info:
            for subscriber in list(self._subscribers):
                try:
                    await subscriber(name, new)
                except Exception:
                    log.exception("backend monitor subscriber failed for %s", name)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
