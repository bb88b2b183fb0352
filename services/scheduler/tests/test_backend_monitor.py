"""BackendMonitor with real backend classes over fake engines and a manual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import httpx
import pytest

from thunder_scheduler.backends.base import Backend
from thunder_scheduler.backends.monitor import BackendMonitor, BackendState, MonitorConfig
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.backends.vllm import VLLMBackend
from thunder_testkit.engines import FakeEngine, FakeSGLang, FakeVLLM


class ManualClock:
    """Virtual time: ``sleep`` parks the caller until ``advance`` moves past its deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + delay_s, next(self._seq), future))
        await future

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, delta_s: float) -> None:
        """Move time forward by ``delta_s``, waking every sleeper due on the way, in order."""
        target = self.now + delta_s
        await self.settle()
        while self._waiters and self._waiters[0][0] <= target:
            deadline, _, future = heapq.heappop(self._waiters)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self.now = target


def sglang(name: str, fake: FakeEngine) -> SGLangBackend:
    return SGLangBackend(name, f"http://{name}", httpx.AsyncClient(transport=fake.transport()))


def make_monitor(
    backends: list[Backend], clock: ManualClock, **knobs: float
) -> tuple[BackendMonitor, list[tuple[str, BackendState]]]:
    changes: list[tuple[str, BackendState]] = []

    async def on_change(name: str, state: BackendState) -> None:
        changes.append((name, state))

    config = MonitorConfig(**knobs)  # type: ignore[arg-type]
    monitor = BackendMonitor(
        backends,
        config,
        on_change=on_change,
        sleep=clock.sleep,
        clock=clock.clock,
        rng=random.Random(7),
    )
    return monitor, changes


async def test_down_backend_is_retried_with_capped_jittered_backoff_without_blocking_others() -> (
    None
):
    clock = ManualClock()
    up, down = FakeSGLang(max_total_num_tokens=5000), FakeSGLang(down=True)
    monitor, changes = make_monitor(
        [sglang("up", up), sglang("down", down)], clock, poll_interval_s=100.0
    )
    monitor.start()
    try:
        await clock.advance(0)
        assert monitor.state("up").healthy
        assert monitor.state("up").info is not None
        assert monitor.state("up").info.capacity_tokens == 5000  # type: ignore[union-attr]
        assert not monitor.state("down").healthy
        assert "Connection refused" in (monitor.state("down").last_error or "")
        await clock.advance(99)  # many retries of "down" in 99 virtual seconds
        retries = [d for d in clock.sleeps if d != 100.0]
        assert len(retries) >= 6
        for attempt, delay in enumerate(retries):
            base = min(30.0, 0.5 * 2**attempt)
            assert 0.8 * base <= delay <= min(30.0, 1.2 * base)
        assert max(retries) <= 30.0 and retries[-1] > 20.0  # reached the cap region
        assert monitor.state("down").consecutive_failures == len(retries)
        assert [name for name, _ in changes] == ["up"]  # failed retries are not changes
        down.down = False
        await clock.advance(31)
        state = monitor.state("down")
        assert state.healthy and state.consecutive_failures == 0 and state.last_error is None
        assert [name for name, s in changes if s.healthy] == ["up", "down"]
        assert sorted(monitor.healthy_names()) == ["down", "up"]
    finally:
        await monitor.aclose()


async def test_polls_load_at_interval() -> None:
    clock = ManualClock()
    fake = FakeSGLang(running_per_rank=2, used_tokens_per_rank=700)
    monitor, _ = make_monitor([sglang("a", fake)], clock, poll_interval_s=2.0)
    monitor.start()
    try:
        await clock.advance(0)
        assert monitor.state("a").load is None
        await clock.advance(2.0)
        load = monitor.state("a").load
        assert load is not None and load.running_requests == 2 and load.used_tokens == 700
        fake.running_per_rank = 5
        await clock.advance(1.0)
        assert monitor.state("a").load.running_requests == 2  # type: ignore[union-attr]
        await clock.advance(1.0)
        assert monitor.state("a").load.running_requests == 5  # type: ignore[union-attr]
        assert monitor.state("a").updated_at_s == 4.0
    finally:
        await monitor.aclose()


async def test_dies_after_n_failures_then_recovers_and_reprobes() -> None:
    clock = ManualClock()
    fake = FakeSGLang(max_total_num_tokens=1000)
    monitor, changes = make_monitor(
        [sglang("a", fake)], clock, poll_interval_s=1.0, unhealthy_after_failures=3
    )
    monitor.start()
    try:
        await clock.advance(0)
        assert monitor.state("a").healthy
        fake.down = True
        await clock.advance(2.0)
        state = monitor.state("a")
        assert state.healthy and state.consecutive_failures == 2  # below the threshold
        await clock.advance(1.0)
        assert not monitor.state("a").healthy
        assert changes[-1][0] == "a" and not changes[-1][1].healthy
        fake.down = False
        fake.max_total_num_tokens = 2000  # restarted with a bigger pool
        await clock.advance(5.0)
        state = monitor.state("a")
        assert state.healthy and state.info is not None and state.info.capacity_tokens == 2000
        assert [s.healthy for _, s in changes] == [True, False, True]
    finally:
        await monitor.aclose()


async def test_one_success_resets_the_failure_count() -> None:
    clock = ManualClock()
    fake = FakeSGLang()
    monitor, _ = make_monitor([sglang("a", fake)], clock, unhealthy_after_failures=3)
    monitor.start()
    try:
        await clock.advance(0)
        fake.down = True
        await clock.advance(2.0)
        fake.down = False
        await clock.advance(1.0)
        fake.down = True
        await clock.advance(2.0)
        assert monitor.state("a").healthy and monitor.state("a").consecutive_failures == 2
    finally:
        await monitor.aclose()


async def test_unknown_capacity_is_never_ready() -> None:
    clock = ManualClock()
    fake = FakeVLLM(num_gpu_blocks=None)
    backend = VLLMBackend("v", "http://v", httpx.AsyncClient(transport=fake.transport()))
    monitor, changes = make_monitor([backend], clock)
    monitor.start()
    try:
        await clock.advance(10)
        state = monitor.state("v")
        assert not state.healthy and state.info is None
        assert "num_gpu_blocks" in (state.last_error or "")
        assert monitor.healthy_names() == [] and changes == []
    finally:
        await monitor.aclose()


async def test_report_failure_from_the_proxy_counts() -> None:
    clock = ManualClock()
    monitor, changes = make_monitor(
        [sglang("a", FakeSGLang())], clock, poll_interval_s=100.0, unhealthy_after_failures=2
    )
    monitor.start()
    try:
        await clock.advance(0)
        await monitor.report_failure("a", "connect refused while forwarding")
        assert monitor.state("a").healthy
        await monitor.report_failure("a", "connect refused while forwarding")
        assert not monitor.state("a").healthy
        assert monitor.state("a").last_error == "connect refused while forwarding"
        assert [s.healthy for _, s in changes] == [True, False]
        with pytest.raises(KeyError, match="unknown backend 'zz'"):
            await monitor.report_failure("zz", "x")
    finally:
        await monitor.aclose()


async def test_failing_subscriber_does_not_stop_monitoring() -> None:
    clock = ManualClock()

    async def broken(name: str, state: BackendState) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[str] = []

    async def good(name: str, state: BackendState) -> None:
        seen.append(name)

    monitor = BackendMonitor(
        [sglang("a", FakeSGLang())], on_change=broken, sleep=clock.sleep, clock=clock.clock
    )
    monitor.subscribe(good)
    monitor.start()
    try:
        await clock.advance(0)
        assert monitor.state("a").healthy and seen == ["a"]
    finally:
        await monitor.aclose()


def test_config_validation_names_the_knob() -> None:
    with pytest.raises(ValueError, match="poll_interval_s must be > 0"):
        MonitorConfig(poll_interval_s=0)
    with pytest.raises(ValueError, match="backoff_max_s"):
        MonitorConfig(backoff_initial_s=5, backoff_max_s=1)
    with pytest.raises(ValueError, match="unhealthy_after_failures"):
        MonitorConfig(unhealthy_after_failures=0)
    with pytest.raises(ValueError, match="backoff_jitter"):
        MonitorConfig(backoff_jitter=1.5)


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate backend names: a"):
        BackendMonitor([sglang("a", FakeSGLang()), sglang("a", FakeSGLang())])


def test_backoff_without_jitter_is_exact_and_capped() -> None:
    config = MonitorConfig(
        backoff_initial_s=1, backoff_multiplier=3, backoff_max_s=10, backoff_jitter=0
    )
    rng = random.Random(0)
    assert [config.backoff_delay_s(i, rng) for i in range(5)] == [1, 3, 9, 10, 10]


async def test_backends_join_and_leave_at_run_time() -> None:
    clock = ManualClock()
    fake = FakeSGLang(max_total_num_tokens=5000)
    monitor, changes = make_monitor([], clock, poll_interval_s=2.0)
    monitor.start()
    try:
        await monitor.add(sglang("a", fake))
        await clock.advance(0)
        assert monitor.state("a").healthy and monitor.active_names() == ["a"]
        with pytest.raises(ValueError, match="already monitored"):
            await monitor.add(sglang("a", fake))

        await monitor.remove("a")  # drained: reported unhealthy once, no longer polled
        assert [(n, s.healthy) for n, s in changes] == [("a", True), ("a", False)]
        assert monitor.state("a").last_error == "removed" and monitor.active_names() == []
        polls = len(clock.sleeps)
        await clock.advance(10.0)
        assert len(clock.sleeps) == polls
        await monitor.remove("a")  # again: nothing more happens
        assert len(changes) == 2

        await monitor.add(sglang("a", fake))  # back (after its weight update): probed again
        await clock.advance(0)
        assert [(n, s.healthy) for n, s in changes][-1] == ("a", True)
        assert monitor.active_names() == ["a"]
        with pytest.raises(KeyError):
            await monitor.remove("nope")
    finally:
        await monitor.aclose()
