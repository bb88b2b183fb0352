"""The scheduler's live page in a real headless browser, and the new series after real traffic.

A real ``thunder-sim serve`` engine (simulated SGLang) behind the real scheduler on loopback;
programs go through the lifecycle API and the proxy; Debian's chromium, driven by Playwright,
opens ``/live``, types the admin key into the page and must show, per replica, a lane per
program coloured by what it is doing (reasoning / acting / ended); on a crowded replica a
program that must wait shows as paused.

The screenshot goes to the test's temp dir; ``THUNDER_LIVE_SCREENSHOT=PATH`` writes it to PATH
instead (how ``docs/images/live-page.png`` was made:
``THUNDER_LIVE_SCREENSHOT=docs/images/live-page.png .venv/bin/pytest -q tests/test_live_page.py``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from thunder_testkit.polling import until

pytestmark = pytest.mark.slow

ADMIN = "live-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def service(sim_fleet: Callable[..., list[str]],
            scheduler_service: Callable[..., Any]) -> Iterator[Any]:
    engines = sim_fleet(2, time_scale=2.0)
    running = scheduler_service(
        backends=[f"gpu{i}@sglang={url}" for i, url in enumerate(engines)], admin_key=ADMIN,
        tick_s=0.5)
    with httpx.Client(base_url=running.url, timeout=30.0) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30.0,
              what="the simulated engine to be ready")
    yield running


def _phase(http: httpx.Client, program_id: str) -> str:
    view = http.get(f"/v1/programs/{program_id}", headers=AUTH).json()
    return str(view["phase"])


def _chat(http: httpx.Client, program_id: str) -> None:
    response = http.post("/v1/chat/completions", headers={"X-Thunder-Program-Id": program_id},
                         json={"model": "Qwen/Qwen3-8B", "max_tokens": 4,
                               "messages": [{"role": "user", "content": "plan the next step"}]})
    assert response.status_code == 200, response.text


def _drive_programs(http: httpx.Client) -> None:
    for pid, framework in (("agent-a", "langgraph"), ("agent-b", "openhands"),
                           ("agent-c", "langgraph"), ("agent-d", "openhands")):
        assert http.post("/v1/programs", headers=AUTH, json={
            "program_id": pid, "framework": framework}).status_code == 201
        _chat(http, pid)
    # agent-b runs a tool (acting); agent-c ends; agent-a's next LLM call is still generating
    assert http.post("/v1/programs/agent-b/tools", headers=AUTH,
                     json={"call_id": "c1", "tool_name": "bash"}).status_code == 200
    assert http.post("/v1/programs/agent-c/end", headers=AUTH,
                     json={"status": "ok"}).status_code == 200


def test_new_series_after_real_traffic(service: Any) -> None:
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        _drive_programs(http)
        samples = _samples(http.get("/metrics").text)
    assert _value(samples, "thunder_programs_started_total", framework="langgraph") == 2
    assert _value(samples, "thunder_programs_started_total", framework="openhands") == 2
    assert _value(samples, "thunder_programs_ended_total", framework="langgraph",
                  status="ok") == 1
    assert _value(samples, "thunder_hold_seconds_count") == 4
    assert sum(_value(samples, "thunder_backend_request_seconds_count", backend=f"gpu{i}")
               for i in range(2)) == 4
    build = [key for key in samples if key[0] == "thunder_build_info"]
    assert len(build) == 1 and dict(build[0][1])["contract"] == "1"


def test_live_page_draws_programs_per_replica(service: Any, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium: run scripts/setup_browser.sh (Debian's chromium package)")

    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        assert http.get("/live/state").status_code == 401  # program ids need the admin key
        _drive_programs(http)
    stop = threading.Event()
    generating = threading.Thread(target=_long_generation, args=(service.url, stop))
    generating.start()
    try:
        _check_page(service, tmp_path)
    finally:
        stop.set()
        generating.join(30)


def _long_generation(url: str, stop: threading.Event) -> None:
    """agent-a reasons: a streamed answer of many tokens, dropped (aborted) when told."""
    with httpx.Client(base_url=url, timeout=60.0) as http, http.stream(
        "POST", "/v1/chat/completions", headers={"X-Thunder-Program-Id": "agent-a"},
        json={"model": "Qwen/Qwen3-8B", "max_tokens": 20000, "stream": True,
              "messages": [{"role": "user", "content": "think it through"}]},
    ) as response:
        for _ in response.iter_bytes():
            if stop.is_set():
                return


def _check_page(service: Any, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        until(lambda: _phase(http, "agent-a") == "reasoning", timeout_s=20.0,
              what="agent-a's long request to be running")
        state = http.get("/live/state", headers=AUTH).json()
    assert [b["name"] for b in state["backends"]] == ["gpu0", "gpu1"]
    placed = {p["program_id"]: p["backend"] for p in state["programs"]}
    assert set(placed) >= {"agent-a", "agent-b", "agent-c", "agent-d"}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 300})
            page.goto(f"{service.url}/live")
            page.wait_for_selector("#auth", state="visible")  # 401: the page asks for the key
            page.fill("#key", ADMIN)
            page.click("#auth button")
            page.wait_for_selector('g[data-program="agent-b"]')
            # a few polls so the segments have width
            page.wait_for_function("document.querySelectorAll('rect[data-state]').length >= 3")
            page.wait_for_timeout(2500)
            states = page.eval_on_selector_all(
                "g.program", "lanes => Object.fromEntries(lanes.map(g => [g.dataset.program, "
                "[...g.querySelectorAll('rect')].map(r => r.dataset.state).pop()]))")
            replicas = page.eval_on_selector_all(
                "section.replica", "s => s.map(x => x.dataset.replica)")
            lanes = page.eval_on_selector_all(
                "section.replica g.program", "gs => Object.fromEntries(gs.map(g => "
                "[g.dataset.program, g.closest('section').dataset.replica]))")
            shot = Path(os.environ.get("THUNDER_LIVE_SCREENSHOT") or tmp_path / "live.png")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert replicas == ["gpu0", "gpu1"]
    for pid in ("agent-a", "agent-b", "agent-d"):  # each lane under the replica it runs on
        assert lanes[pid] == placed[pid], (lanes, placed)
    assert states["agent-a"] == "reasoning"
    assert states["agent-b"] == "acting"
    assert states["agent-c"] == "ended"
    assert shot.stat().st_size > 10_000


@pytest.fixture
def crowded_service(sim_fleet: Callable[..., list[str]],
                    scheduler_service: Callable[..., Any]) -> Iterator[Any]:
    """One replica with an 8k-token KV pool and low watermarks: a third program must wait."""
    (engine,) = sim_fleet(1, time_scale=2.0, extra_args=["--max-total-tokens", "8192"])
    running = scheduler_service(backends=[f"gpu0@sglang={engine}"], tick_s=0.5,
                                high_watermark=0.3, low_watermark=0.2)
    with httpx.Client(base_url=running.url, timeout=30.0) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30.0,
              what="the simulated engine to be ready")
    yield running


def _held_request(url: str, program_id: str, outcome: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=120.0) as http:
        response = http.post(
            "/v1/chat/completions", headers={"X-Thunder-Program-Id": program_id},
            json={"model": "Qwen/Qwen3-8B", "max_tokens": 4,
                  "messages": [{"role": "user", "content": "word " * 600}]})
        outcome.append(response.status_code)


def test_live_page_shows_a_paused_program(crowded_service: Any, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium: run scripts/setup_browser.sh (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    url = crowded_service.url
    outcome: list[int] = []
    with httpx.Client(base_url=url, timeout=30.0) as http:
        for pid in ("p1", "p2"):  # two acting programs fill the pool past the watermark
            http.post("/v1/programs", json={"program_id": pid})
            response = http.post(
                "/v1/chat/completions", headers={"X-Thunder-Program-Id": pid},
                json={"model": "Qwen/Qwen3-8B", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "word " * 600}]})
            assert response.status_code == 200
            http.post(f"/v1/programs/{pid}/tools", json={"call_id": "c", "tool_name": "bash"})
        http.post("/v1/programs", json={"program_id": "p3"})
        waiting = threading.Thread(target=_held_request, args=(url, "p3", outcome))
        waiting.start()
        try:
            until(lambda: http.get("/v1/programs/p3").json()["status"] == "paused",
                  timeout_s=20.0, what="p3 to wait paused")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
                try:
                    page = browser.new_page(viewport={"width": 1100, "height": 300})
                    page.goto(f"{url}/live")
                    page.wait_for_selector('g[data-program="p3"] rect[data-state="paused"]')
                    counts = page.text_content("#counts")
                finally:
                    browser.close()
        finally:
            http.post("/v1/programs/p3/end", json={"status": "cancelled"})
            waiting.join(60)
    assert counts is not None and "1 paused" in counts
    assert outcome and outcome[0] == 409  # the held request of an ended program is refused
