"""The program series of the real app, in process: started / ended by framework and status,
lease expiries counted as their own status, framework labels kept bounded, build info."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from thunder_core.contract import CONTRACT_VERSION
from thunder_scheduler import __version__
from thunder_scheduler.app import create_app
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.settings import load_settings
from thunder_testkit.service import in_process_client


@pytest.fixture
async def app_and_client() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, ManualClock]]:
    clock = ManualClock(1000.0)
    app = create_app(load_settings({"lease_s": 60.0}), backends=[], clock=clock)
    async with in_process_client(app) as http:
        yield app, http, clock


async def _samples(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = (await http.get("/metrics")).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict, name: str, **labels: str) -> float:
    return float(samples.get((name, frozenset(labels.items())), 0.0))


async def test_program_starts_and_ends_by_framework_and_status(
    app_and_client: tuple[FastAPI, httpx.AsyncClient, ManualClock],
) -> None:
    app, http, clock = app_and_client
    for pid, framework in (("a", "langgraph"), ("b", "langgraph"), ("c", "openhands"),
                           ("d", "my-own-agent")):
        assert (await http.post("/v1/programs", json={
            "program_id": pid, "framework": framework})).status_code == 201
    # a start event for a live program adopts it: not a second start
    await http.post("/v1/programs", json={"program_id": "a", "framework": "langgraph"})
    await http.post("/v1/programs/a/end", json={"status": "ok"})
    await http.post("/v1/programs/b/end", json={"status": "error"})
    clock.advance(120.0)  # past the 60 s lease of the idle ones
    app.state.thunder.driver.tick()
    samples = await _samples(http)
    assert _get(samples, "thunder_programs_started_total", framework="langgraph") == 2
    assert _get(samples, "thunder_programs_started_total", framework="openhands") == 1
    assert _get(samples, "thunder_programs_started_total", framework="other") == 1
    assert _get(samples, "thunder_programs_ended_total", framework="langgraph", status="ok") == 1
    assert _get(samples, "thunder_programs_ended_total", framework="langgraph",
                status="error") == 1
    assert _get(samples, "thunder_programs_ended_total", framework="openhands",
                status="lease_expired") == 1
    assert _get(samples, "thunder_programs_ended_total", framework="other",
                status="lease_expired") == 1
    assert not any("my-own-agent" in dict(labels).values() for _, labels in samples)


async def test_build_info_names_the_running_build(
    app_and_client: tuple[FastAPI, httpx.AsyncClient, ManualClock],
) -> None:
    _, http, _ = app_and_client
    python = ".".join(map(str, sys.version_info[:3]))
    samples = await _samples(http)
    assert _get(samples, "thunder_build_info", version=__version__, contract=CONTRACT_VERSION,
                python=python) == 1
