"""The host tier over loopback HTTP against ``thunder-sim serve --enable-hierarchical-cache``
(SGLang HiCache's flags, ``/server_info`` fields, ``cached_tokens`` and metrics):

* the SGLang backend reports HiCache's host pool, as the engine's own gauge counts it, to the
  core (``/ready``, ``BackendUpdated``); sized by ``--hicache-size`` (GB), which
  ``/server_info`` cannot turn into tokens here, it falls back to that gauge;
* a program paused with its KV put in host (the driver's ``Pause(kv_tier=HOST)``) loses its
  device KV to another program, and the warm-up the core's ``Prewarm`` sends before its return
  loads it back from host: its next request finds the whole prefix cached, and the engine's
  recompute ledger shows no token of it prefilled again. The same run without HiCache is the
  control: there the warm-up recomputes it.

The driver runs with a scripted core (``thunder_testkit.cores.ScriptedCore``) so that the pause
happens exactly where the test needs it; the policy that chooses the place is tested in
``packages/thunder-scheduling``. The last test runs the whole service with the real core
(``thunder``): a program in a long tool call loses the device to another and comes back to its
prefix cached, loaded from host.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fixtures.scheduler_service import RunningService
from fixtures.sim_fleet import SimFleet

from thunder_core.contract import EnginePaths
from thunder_scheduler.backends._prometheus import parse_samples, sum_samples
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import Pause, Prewarm
from thunder_scheduling.events import ProgramEnded
from thunder_scheduling.kv_tiers import KvTier
from thunder_testkit import until, until_async
from thunder_testkit.cores import ScriptedCore

POOL = 4096          # device KV tokens of the simulated engine
PAGE = 16
A_TOKENS = 2000      # the paused program's prompt (125 pages)
B_TOKENS = 3900      # the program that takes the device meanwhile

SIM = ["--max-total-tokens", str(POOL), "--page-size", str(PAGE)]
HICACHE = ["--enable-hierarchical-cache", "--hicache-ratio", "2"]


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = [s for s in parse_samples("sim", text)
               if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum_samples(samples, name) or 0.0


def test_the_backend_reports_hicache_s_host_pool(
    sim_fleet: SimFleet, scheduler_service: Any,
) -> None:
    [url] = sim_fleet(1, time_scale=50.0, extra_args=[*SIM, *HICACHE])
    service: RunningService = scheduler_service(backends=[f"s@sglang={url}"])
    with httpx.Client(base_url=service.url, timeout=30) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30, what="/ready")
        report = http.get("/ready").json()["backends"]["s"]
        scheduler_metrics = http.get("/metrics").text
    expected = (POOL * 2 // PAGE + 1) * PAGE  # SGLang's HostKVCache sizing
    assert report["host_capacity_tokens"] == expected
    assert _metric(url, "sglang:hicache_host_total_tokens") == expected  # the engine agrees
    assert f'thunder_backend_host_kv_capacity_tokens{{backend="s"}} {float(expected)}' \
        in scheduler_metrics


async def test_a_host_size_in_gb_is_read_from_the_engine_s_gauge(sim_fleet: SimFleet) -> None:
    [url] = sim_fleet(1, time_scale=50.0,
                      extra_args=[*SIM, "--enable-hierarchical-cache", "--hicache-size", "1"])
    async with httpx.AsyncClient() as http:
        info = await SGLangBackend("s", url, http).probe()
    gauge = _metric(url, "sglang:hicache_host_total_tokens")
    assert gauge > POOL  # 1 GB of Qwen3-8B KV (144 KiB per token) is ~6.9k tokens
    assert info.host_capacity_tokens == int(gauge)


def _generate(url: str, rid: str, ids: list[int]) -> dict[str, Any]:
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 1}, "rid": rid}
    response = httpx.post(f"{url}{EnginePaths.GENERATE}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json()["meta_info"])


@pytest.mark.parametrize("hicache", [True, False], ids=["hicache", "no-hicache"])
async def test_a_program_paused_to_host_is_loaded_back_before_it_returns(
    sim_fleet: SimFleet, hicache: bool,
) -> None:
    [url] = sim_fleet(1, time_scale=50.0, extra_args=[*SIM, *(HICACHE if hicache else [])])
    a_prompt = list(range(1000, 1000 + A_TOKENS))
    b_prompt = list(range(50_000, 50_000 + B_TOKENS))
    assert _generate(url, "A:1", a_prompt)["cached_tokens"] == 0

    async with httpx.AsyncClient() as http:
        backend = SGLangBackend("s", url, http)
        info = await backend.probe()
        assert (info.host_capacity_tokens > 0) is hicache
        core = ScriptedCore([[Pause("A", "s", A_TOKENS, kv_tier=KvTier.HOST)], [Prewarm("A", "s")]])
        driver = Driver(core, {"s": backend}, ManualClock(0.0), ServiceMetrics(),
                        prewarm_http=http)
        driver.remember_body("A", EnginePaths.GENERATE, {"input_ids": a_prompt})
        driver.feed(ProgramEnded(at=1.0, program_id="x"))             # -> Pause A, KV to host
        await asyncio.to_thread(_generate, url, "B:1", b_prompt)      # B takes the device
        evicted = _metric(url, "sglang:evicted_tokens_total")
        assert evicted >= A_TOKENS - PAGE, "B's prefill must evict A's KV from the device"
        driver.feed(ProgramEnded(at=2.0, program_id="x"))             # -> Prewarm A
        await until_async(
            lambda: driver.metrics.registry.get_sample_value("thunder_prewarms_total") == 1,
            what="the warm-up before A returns")
        await driver.aclose()

    loaded = _metric(url, "sglang:load_back_tokens_total")
    recomputed = _metric(url, "thunder_sim_prompt_miss_tokens_total", cause="evicted_away")
    back = _generate(url, "A:2", [*a_prompt, *range(9000, 9100)])      # A returns
    if hicache:
        assert loaded >= A_TOKENS - PAGE          # the warm-up loaded A's prefix from host
        assert recomputed == 0                    # and no token of it was prefilled again
    else:
        assert loaded == 0
        assert recomputed >= A_TOKENS - PAGE      # the control: the warm-up recomputed it
    assert back["cached_tokens"] >= A_TOKENS - PAGE  # either way A returns to a warm cache


def test_the_whole_service_offloads_a_long_tool_call_and_loads_it_back_before_its_end(
    sim_fleet: SimFleet, scheduler_service: Any,
) -> None:
    """The real core (``thunder``) decides: program P starts a 60 s tool call and program Q
    needs the device; the core puts P's KV in the engine's host tier (a pause or an offload
    with ``kv_tier`` host), Q's prefill evicts it from the device into host, and when P returns its
    whole prefix is cached, loaded back from host, none of it prefilled again. (When the
    load-back happens, at the core's warm-up or at P's request, is the policy's timing.)"""
    scale = 20.0
    [url] = sim_fleet(1, time_scale=scale, extra_args=[
        "--max-total-tokens", "8192", "--page-size", str(PAGE), "--enable-hierarchical-cache",
        "--hicache-ratio", "4"])
    service: RunningService = scheduler_service(
        backends=[f"s@sglang={url}"], policy="thunder", time_scale=scale,
        monitor_interval_s=0.2)
    p_prompt = list(range(1000, 4000))        # 3,000 tokens
    q_prompt = list(range(50_000, 57_500))    # 7,500 tokens: P's KV cannot stay on the device
    with httpx.Client(base_url=service.url, timeout=60) as http:
        until(lambda: http.get("/ready").status_code == 200, timeout_s=30, what="/ready")

        def generate(program: str, ids: list[int]) -> dict[str, Any]:
            response = http.post(EnginePaths.GENERATE, headers={"X-Thunder-Program-Id": program},
                                 json={"input_ids": ids, "sampling_params": {"max_new_tokens": 1}})
            assert response.status_code == 200, response.text
            return dict(response.json()["meta_info"])

        generate("P", p_prompt)
        started = http.post("/v1/programs/P/tools", json={
            "call_id": "build", "tool_name": "build", "expected_duration_s": 60.0})
        assert started.status_code == 200, started.text
        generate("Q", q_prompt)
        assert _metric(url, "sglang:evicted_tokens_total") >= 2_000  # P's KV left the device
        ended = http.post("/v1/programs/P/tools/build/end", json={})
        assert ended.status_code == 200, ended.text
        back = generate("P", [*p_prompt, *range(9000, 9100)])
        host = http.get("/ready").json()["backends"]["s"]["host_capacity_tokens"]
    assert host == (8192 * 4 // PAGE + 1) * PAGE  # what the core budgets the host tier with
    assert back["cached_tokens"] >= len(p_prompt) - PAGE
    assert _metric(url, "sglang:load_back_tokens_total") >= 2_000  # from host, not recomputed
    assert _metric(url, "thunder_sim_prompt_miss_tokens_total", cause="evicted_away") == 0
