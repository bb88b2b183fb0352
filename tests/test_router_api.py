"""The scheduler in place of ``sglang-router`` in an RL loop, against real simulated SGLang
engines: ``/generate`` passes the proxy's conformance checks (status and stream pass-through,
attribution, bad input), workers join and leave through the router's worker API, and an engine
that goes away for a weight update and comes back loses no program and is flushed in the core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fixtures.scheduler_service import RunningService
from fixtures.sim_fleet import SimFleet

from thunder_core.contract import PROGRAM_ID_HEADER, REQUEST_ID_HEADER, RouterPaths
from thunder_scheduler.settings import load_settings
from thunder_testkit.polling import until

MODEL = "Qwen/Qwen3-8B"
IDS = list(range(100, 164))


def _generate(url: str, body: dict[str, Any], program: str | None = None) -> httpx.Response:
    headers = {PROGRAM_ID_HEADER: program} if program else {}
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=30)


def _program(url: str, program: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/programs/{program}", timeout=5)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _healthy_workers(url: str) -> list[str]:
    rows = httpx.get(f"{url}{RouterPaths.WORKERS}", timeout=5).json()["workers"]
    return [row["url"] for row in rows if row["is_healthy"]]


def _serve(sim_fleet: SimFleet, scheduler_service: Callable[..., RunningService], n: int
           ) -> tuple[list[str], RunningService]:
    """``n`` simulated engines added through ``/add_worker`` to a scheduler started with none."""
    engines = sim_fleet(n, time_scale=50.0)
    service = scheduler_service(load_settings({"monitor_interval_s": 0.2}))
    for engine in engines:
        added = httpx.post(f"{service.url}{RouterPaths.ADD_WORKER}",
                           params={RouterPaths.URL_PARAM: engine}, timeout=5)
        assert added.status_code == 200, added.text
    until(lambda: sorted(_healthy_workers(service.url)) == sorted(engines), timeout_s=30,
          what="the added workers to become healthy")
    return engines, service


@pytest.fixture
def one_engine(sim_fleet: SimFleet, scheduler_service: Callable[..., RunningService]
               ) -> tuple[str, RunningService]:
    (engine,), service = _serve(sim_fleet, scheduler_service, 1)
    return engine, service


@pytest.mark.slow
def test_generate_passes_the_proxy_conformance_checks(one_engine: tuple[str, RunningService]
                                                      ) -> None:
    _engine, service = one_engine
    url = service.url
    # input_ids, attributed by the header; the engine's answer comes back as it is
    answer = _generate(url, {"input_ids": IDS, "rid": "mine",
                             "sampling_params": {"max_new_tokens": 4, "temperature": 1.0}},
                       program="rollout0-g0-s0")
    assert answer.status_code == 200, answer.text
    assert answer.json()["meta_info"]["completion_tokens"] == 4
    assert answer.headers[REQUEST_ID_HEADER] == "mine"  # the client's rid reaches the engine
    view = _program(url, "rollout0-g0-s0")
    assert (view["requests"], view["completion_tokens"]) == (1, 4)
    # text, attributed by the body field (as ThunderAgent clients send it)
    answer = _generate(url, {"text": "hello there", "program_id": "rollout0-g0-s1",
                             "sampling_params": {"max_new_tokens": 2}})
    assert answer.status_code == 200, answer.text
    assert _program(url, "rollout0-g0-s1")["requests"] == 1
    assert answer.headers[REQUEST_ID_HEADER].startswith("rollout0-g0-s1:")  # none sent: ours
    # streaming passes through as server-sent events, ending as SGLang ends it
    with httpx.stream("POST", f"{url}/generate", timeout=30, headers={
            PROGRAM_ID_HEADER: "rollout0-g0-s0"}, json={
            "input_ids": IDS, "stream": True, "sampling_params": {"max_new_tokens": 3}}) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [line for line in s.iter_lines() if line.startswith("data:")]
    assert len(events) >= 2 and events[-1] == "data: [DONE]"
    assert _program(url, "rollout0-g0-s0")["requests"] == 2
    # the engine's own refusal passes through with its status and message
    both = _generate(url, {"text": "x", "input_ids": IDS}, program="rollout0-g0-s0")
    assert both.status_code == 400
    assert "not both" in both.text
    # bad input is the proxy's 400, naming the field
    for body, field in (({"sampling_params": {}}, "input_ids"),
                        ({"input_ids": "1 2 3"}, "input_ids"),
                        ({"text": 5}, "text")):
        refused = _generate(url, body, program="rollout0-g0-s0")
        assert refused.status_code == 400, body
        assert field in refused.json()["error"]["message"]
    malformed = httpx.post(f"{url}/generate", content=b"{nope", timeout=5)
    assert malformed.status_code == 400


@pytest.mark.slow
def test_workers_join_leave_and_come_back_from_a_weight_update(
    sim_fleet: SimFleet, scheduler_service: Callable[..., RunningService],
) -> None:
    (first, second), service = _serve(sim_fleet, scheduler_service, 2)
    url = service.url
    assert sorted(httpx.get(f"{url}{RouterPaths.LIST_WORKERS}", timeout=5).json()["urls"]) == \
        sorted([first, second])
    programs = [f"batch0-g{g}-s{s}" for g in range(3) for s in range(2)]
    for program in programs:
        assert _generate(url, {"input_ids": IDS, "sampling_params": {"max_new_tokens": 2}},
                         program).status_code == 200
    parts = service.app.state.thunder
    core = parts.driver.core
    name = {parts.driver.backends[n].base_url: n for n in parts.driver.backends}
    away = name[first]
    on_away = [p for p in programs if _program(url, p)["backend"] == away]
    assert on_away, "the programs spread over both engines"

    # the first engine leaves for its weight update: none of its programs is ended, none
    # stays active there
    removed = httpx.post(f"{url}{RouterPaths.REMOVE_WORKER}",
                         params={RouterPaths.URL_PARAM: first}, timeout=5)
    assert removed.status_code == 200, removed.text
    assert httpx.get(f"{url}{RouterPaths.LIST_WORKERS}", timeout=5).json() == {"urls": [second]}
    until(lambda: all(_program(url, p)["status"] == "paused" or _program(url, p)["backend"]
                      != away for p in on_away),
          timeout_s=10, what="the removed worker's programs to leave it")
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(_generate(
        url, {"input_ids": IDS, "sampling_params": {"max_new_tokens": 2}}, on_away[0])))
    waiting.start()

    # it comes back (the /workers spelling): the request is answered, every program is live,
    # and the core assumes nothing cached there any more
    flushes = service.call(lambda: core.snapshot().counters.backend_flushes)
    readded = httpx.post(f"{url}{RouterPaths.WORKERS}", json={"url": first}, timeout=5)
    assert readded.status_code == 200 and readded.json()["success"] is True, readded.text
    waiting.join(timeout=60)
    assert answers and answers[0].status_code == 200, answers
    until(lambda: service.call(lambda: core.snapshot().counters.backend_flushes) == flushes + 1,
          timeout_s=30, what="the returning engine to be flushed in the core")
    for program in programs:
        assert _program(url, program)["status"] in ("active", "paused"), program
    snapshot = service.call(core.snapshot)
    assert next(b for b in snapshot.backends if b.name == away).shared_prefix_tokens == 0

    # an explicit flush after a weight update reaches the engines and the core
    flushed = httpx.post(f"{url}{RouterPaths.FLUSH_CACHE}", timeout=10)
    assert flushed.status_code == 200, flushed.text
    assert sorted(flushed.json()["flushed"]) == sorted(name.values())
    assert service.call(lambda: core.snapshot().counters.backend_flushes) == flushes + 3


def test_worker_endpoints_refuse_bad_input(scheduler_service: Callable[..., RunningService]
                                           ) -> None:
    url = scheduler_service(load_settings({})).url
    missing = httpx.post(f"{url}{RouterPaths.ADD_WORKER}", timeout=5)
    assert missing.status_code == 400 and "url" in missing.json()["error"]["message"]
    bad = httpx.post(f"{url}{RouterPaths.ADD_WORKER}",
                     params={RouterPaths.URL_PARAM: "ftp://gpu1"}, timeout=5)
    assert bad.status_code == 400 and "ftp://gpu1" in bad.json()["error"]["message"]
    not_json = httpx.post(f"{url}{RouterPaths.WORKERS}", content=b"{", timeout=5)
    assert not_json.status_code == 400
    unknown = httpx.post(f"{url}{RouterPaths.REMOVE_WORKER}",
                         params={RouterPaths.URL_PARAM: "http://127.0.0.1:9"}, timeout=5)
    assert unknown.status_code == 404
    assert httpx.get(f"{url}{RouterPaths.WORKERS}/http%3A%2F%2F127.0.0.1%3A9",
                     timeout=5).status_code == 404
    assert httpx.get(f"{url}{RouterPaths.LIST_WORKERS}", timeout=5).json() == {"urls": []}
