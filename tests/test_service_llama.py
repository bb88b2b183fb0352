"""The real service in front of two real llama-server engines: placement, stickiness, health.

* a new program goes to the backend with the most free KV tokens (the first program lands on
  one engine, the second on the other), and a program's later turns stick to its backend;
* ``/ready`` reports both engines with their capacity; ``/metrics`` carries tokens and KV;
* an engine that dies is marked unhealthy (``/ready``, ``thunder_backend_healthy`` 0) and its
  program's next request is placed on the surviving engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fixtures.llama_engines import LlamaEngine
from fixtures.scheduler_service import RunningService

from thunder_testkit import until

pytestmark = [pytest.mark.llama, pytest.mark.slow]

HEADER = "X-Thunder-Program-Id"


def _chat(http: httpx.Client, program_id: str, text: str) -> dict[str, Any]:
    response = http.post("/v1/chat/completions", headers={HEADER: program_id}, json={
        "model": "smollm2",
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": text}],
        "max_tokens": 4,
        "temperature": 0,
    })
    assert response.status_code == 200, response.text
    return dict(response.json())


def _backend_of(http: httpx.Client, program_id: str) -> str:
    view = http.get(f"/v1/programs/{program_id}").json()
    assert view["backend"] is not None, view
    return str(view["backend"])


def _start(
    llama_engines: Callable[..., list[LlamaEngine]],
    scheduler_service: Callable[..., RunningService],
) -> tuple[list[LlamaEngine], RunningService]:
    engines = llama_engines(n=2, ctx_tokens=4096, parallel=2)
    service = scheduler_service(
        backends=[f"e{i}@llamacpp={e.url}" for i, e in enumerate(engines)],
        monitor_interval_s=0.2,
        monitor_unhealthy_after_failures=2,
        monitor_backoff_max_s=1.0,
    )
    return engines, service


def test_placement_by_free_kv_and_stickiness(
    llama_engines: Callable[..., list[LlamaEngine]],
    scheduler_service: Callable[..., RunningService],
) -> None:
    _, service = _start(llama_engines, scheduler_service)
    with httpx.Client(base_url=service.url, timeout=120.0) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30, what="/ready")
        report = http.get("/ready").json()["backends"]
        assert {name: entry["capacity_tokens"] for name, entry in report.items()} == {
            "e0": 4096, "e1": 4096,
        }
        _chat(http, "first", "Say one word.")
        first = _backend_of(http, "first")
        _chat(http, "second", "Say another word.")
        second = _backend_of(http, "second")
        assert second != first, "the second program should go to the engine with more free KV"
        _chat(http, "first", "And again.")
        assert _backend_of(http, "first") == first, "a program sticks to its backend"
        view = http.get("/v1/programs/first").json()
        assert view["requests"] == 2
        assert view["prompt_tokens"] > 0 and view["tokens_exact"] is True
        metrics = http.get("/metrics").text
        assert 'thunder_backend_kv_capacity_tokens{backend="e0"} 4096.0' in metrics
        assert 'thunder_requests_total{outcome="ok"} 3.0' in metrics
        prompt_line = next(line for line in metrics.splitlines()
                           if line.startswith('thunder_tokens_total{kind="prompt"}'))
        assert float(prompt_line.split()[-1]) > 0


def test_dead_backend_is_marked_unhealthy_and_its_program_moves(
    llama_engines: Callable[..., list[LlamaEngine]],
    scheduler_service: Callable[..., RunningService],
) -> None:
    engines, service = _start(llama_engines, scheduler_service)
    with httpx.Client(base_url=service.url, timeout=120.0) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30, what="/ready")
        _chat(http, "mover", "Say one word.")
        before = _backend_of(http, "mover")
        victim = engines[int(before.removeprefix("e"))]
        victim.process.kill()
        victim.process.wait(10)

        def marked_down() -> bool:
            backends = http.get("/ready").json()["backends"]
            return backends[before]["healthy"] is False

        until(marked_down, timeout_s=30, what=f"{before} to be marked unhealthy")
        assert f'thunder_backend_healthy{{backend="{before}"}} 0.0' in http.get("/metrics").text
        _chat(http, "mover", "Still there?")
        after = _backend_of(http, "mover")
        assert after != before, "the program must be placed on the surviving engine"
