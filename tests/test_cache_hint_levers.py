"""Cache hints turned into engine levers, end to end on loopback: the real scheduler service in
front of a real ``thunder-sim serve`` process (the simulated SGLang engine), hints sent on the
lifecycle API (docs/cache-hints.md, ``prefills.py``).

* ``shared_prefix``: the prefix is warmed at the top priority, so an engine started with
  ``--radix-eviction-policy priority`` keeps it through a flood that evicts everything else
  (without the hint the same flood evicts it: LRU among equal priorities);
* ``context_compacted``: the program's remembered body is forgotten, so a later warm-up has
  nothing stale to send;
* ``back_in``: the core's expected end of the running tool;
* ``conversation_ended``: the program ends (its engine state is released by the end path).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from thunder_core.contract import PROGRAM_ID_HEADER, Paths, shared_prefix_id
from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.service import RunningService, start_service_thread

SYSTEM = "You are a meticulous coding agent; read every file before you edit it. " * 60
TOOLS = [{"type": "function", "function": {"name": "bash", "description": "run a command",
                                           "parameters": {"type": "object", "properties": {
                                               "cmd": {"type": "string"}}}}}]
POOL_TOKENS = 8192


@pytest.fixture
def service(sim_fleet: Any) -> Iterator[RunningService]:
    (url,) = sim_fleet(1, time_scale=200.0, extra_args=[
        "--max-total-tokens", str(POOL_TOKENS), "--radix-eviction-policy", "priority",
        "--enable-priority-scheduling"])
    running = start_service_thread(load_settings({"backends": [f"sglang={url}"]}))
    try:
        wait_http(f"{running.url}/ready", timeout_s=20)
        yield running
    finally:
        running.stop()


def _chat(http: httpx.Client, program_id: str | None, messages: list[dict[str, Any]],
          tools: list[dict[str, Any]] | None = TOOLS) -> dict[str, Any]:
    headers = {PROGRAM_ID_HEADER: program_id} if program_id else {}
    body: dict[str, Any] = {"model": "m", "messages": messages, "max_tokens": 2}
    if tools:
        body["tools"] = tools
    response = http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def _metric(http: httpx.Client, name: str, labels: str) -> float:
    head = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(head):
            return float(line.split()[-1])
    return 0.0


def _hints(http: httpx.Client, program_id: str, *hints: dict[str, Any]) -> httpx.Response:
    return http.post(Paths.HINTS.format(program_id=program_id), json={"hints": list(hints)})


@pytest.mark.parametrize("hinted", [True, False])
def test_a_shared_prefix_hint_keeps_the_prefix_through_a_flood(
        service: RunningService, hinted: bool) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        http.post("/v1/programs", json={"program_id": "a"})
        first = _chat(http, "a", [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": "list the files"}])
        system_tokens = first["usage"]["prompt_tokens"] - 16
        if hinted:
            response = _hints(http, "a", {"kind": "shared_prefix",
                                          "prefix_id": shared_prefix_id(SYSTEM, TOOLS)})
            assert response.status_code == 200
            until(lambda: _metric(http, "thunder_prewarms_total", "") >= 1, timeout_s=20)
            assert _metric(http, "thunder_cache_hint_levers_total",
                           'hint="shared_prefix",result="sent"') == 1
        for i in range(6):  # ~2,000 new tokens each, 12k in all: the pool holds 8k
            _chat(http, None, [{"role": "user", "content": f"flood {i} " + "x y z " * 600}],
                  tools=None)
        http.post("/v1/programs", json={"program_id": "b"})
        second = _chat(http, "b", [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": "read the README"}])
        cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        if hinted:
            assert cached >= system_tokens - 64
        else:
            assert cached < system_tokens // 2


def test_context_compacted_forgets_what_a_warm_up_would_send(service: RunningService) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        http.post("/v1/programs", json={"program_id": "c"})
        _chat(http, "c", [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": "summarise"}])
        assert _hints(http, "c", {"kind": "context_compacted"}).status_code == 200
        assert _metric(http, "thunder_cache_hint_levers_total",
                       'hint="context_compacted",result="forgotten"') == 1
        # A shared-prefix hint now finds no body to warm from: it waits for the next request.
        _hints(http, "c", {"kind": "shared_prefix", "prefix_id": shared_prefix_id(SYSTEM, TOOLS)})
        assert _metric(http, "thunder_cache_hint_levers_total",
                       'hint="shared_prefix",result="sent"') == 0
        _chat(http, "c", [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": "go on"}])
        until(lambda: _metric(http, "thunder_cache_hint_levers_total",
                              'hint="shared_prefix",result="sent"') == 1, timeout_s=20)


def test_back_in_and_conversation_ended_reach_the_core(service: RunningService) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        http.post("/v1/programs", json={"program_id": "d"})
        _chat(http, "d", [{"role": "user", "content": "run the tests"}])
        http.post("/v1/programs/d/tools", json={"call_id": "t1", "tool_name": "pytest"})
        view = _hints(http, "d", {"kind": "back_in", "seconds": 40}).json()
        assert view["phase"] == "acting"
        view = _hints(http, "d", {"kind": "conversation_ended"}).json()
        assert view["status"] == "terminated"
        assert _chat(http, "d", [{"role": "user", "content": "again"}])  # a new incarnation
