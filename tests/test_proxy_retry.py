"""A request whose engine is gone (connection refused, or dropped before any answer) is retried
once on another healthy backend, with real engine processes: the scheduler has not yet noticed
the death (its next poll is an hour away), the client still gets its answer."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import httpx
import pytest
from fixtures.scheduler_service import RunningService
from fixtures.sim_fleet import SimFleet

from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings

MODEL = "Qwen/Qwen3-8B"


def _chat(url: str, program: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers={
        "X-Thunder-Program-Id": program}, json={
        "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.slow
def test_a_request_to_a_dead_engine_is_retried_on_a_healthy_one(
    sim_fleet: SimFleet, scheduler_service: Callable[..., RunningService],
) -> None:
    url_a, url_b = sim_fleet(2, time_scale=50.0)
    proc_a = sim_fleet.children[0].process
    service = scheduler_service(load_settings({
        "backends": [f"a@sglang={url_a}", f"b@sglang={url_b}"], "monitor_interval_s": 3600,
    }))
    wait_http(f"{service.url}/ready", timeout_s=30)
    placed: dict[str, str] = {}
    for i in range(8):  # programs spread over both engines
        assert _chat(service.url, f"p{i}").status_code == 200
        view = httpx.get(f"{service.url}/v1/programs/p{i}", timeout=5).json()
        placed[f"p{i}"] = view["backend"]
    on_a = [program for program, backend in placed.items() if backend == "a"]
    assert on_a, placed

    proc_a.send_signal(signal.SIGKILL)  # dies between two polls: still "healthy"
    proc_a.wait(10)
    for program in on_a:
        answer = _chat(service.url, program)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
    assert re.search(r'upstream_failures_total\{backend="a"\} [1-9]', metrics), metrics[:2000]
