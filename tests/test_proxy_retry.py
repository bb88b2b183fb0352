"""A request whose engine is gone (connection refused, or dropped before any answer) is retried
once on another healthy backend, with real engine processes: the scheduler has not yet noticed
the death (its next poll is an hour away), the client still gets its answer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fixtures.scheduler_service import RunningService

from thunder_scheduler.settings import load_settings

_READY = re.compile(r"thunder-sim ready: (http://\S+)")
MODEL = "Qwen/Qwen3-8B"


@pytest.fixture
def engines() -> Iterator[Callable[[], tuple[subprocess.Popen[str], str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thunder_sim", "serve", "--preset", "h100-qwen3-8b",
             "--host", "127.0.0.1", "--port", "0", "--time-scale", "50"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(proc)
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := _READY.search(line):
                return proc, match.group(1)
        raise RuntimeError("thunder-sim serve did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _chat(url: str, program: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers={
        "X-Thunder-Program-Id": program}, json={
        "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.slow
def test_a_request_to_a_dead_engine_is_retried_on_a_healthy_one(
    engines: Callable[[], tuple[subprocess.Popen[str], str]],
    scheduler_service: Callable[..., RunningService],
) -> None:
    (proc_a, url_a), (_, url_b) = engines(), engines()
    service = scheduler_service(load_settings({
        "backends": [f"a@sglang={url_a}", f"b@sglang={url_b}"], "monitor_interval_s": 3600,
    }))
    deadline = time.monotonic() + 30
    while httpx.get(f"{service.url}/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the scheduler never became ready"
        time.sleep(0.1)
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
