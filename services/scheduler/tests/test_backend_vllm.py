"""VLLMBackend against a MockTransport fake shaped like vLLM's /metrics and /v1/models."""

from __future__ import annotations

import httpx
import pytest

from thunder_scheduler.backends import BackendUnavailable, RequestHints
from thunder_scheduler.backends.vllm import VLLMBackend
from thunder_testkit.engines import FakeVLLM


def make(fake: FakeVLLM, **kwargs: bool) -> VLLMBackend:
    client = httpx.AsyncClient(transport=fake.transport())
    return VLLMBackend("v", "http://gpu2:8000", client, **kwargs)


async def test_capacity_is_block_size_times_gpu_blocks() -> None:
    info = await make(FakeVLLM(block_size=16, num_gpu_blocks=6250)).probe()
    assert info.capacity_tokens == 100_000
    assert info.page_size_tokens == 16
    assert info.models == ("meta-llama/Llama-3.1-8B-Instruct",)
    assert info.max_context_tokens == 32_768


async def test_capacity_sums_data_parallel_engines() -> None:
    info = await make(FakeVLLM(block_size=32, num_gpu_blocks=1000, engines=2)).probe()
    assert info.capacity_tokens == 64_000


async def test_blocks_not_allocated_yet_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="num_gpu_blocks"):
        await make(FakeVLLM(num_gpu_blocks=None)).probe()


async def test_missing_metrics_names_the_reason() -> None:
    with pytest.raises(BackendUnavailable, match="cache_config_info"):
        await make(FakeVLLM(status_overrides={"/metrics": 404})).probe()


async def test_metrics_without_cache_info_names_the_flag() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='vllm:num_requests_running{engine="0"} 1\n')

    backend = VLLMBackend(
        "v", "http://v", httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(BackendUnavailable, match="disable-log-stats"):
        await backend.probe()


async def test_load_from_metrics() -> None:
    fake = FakeVLLM(
        block_size=16,
        num_gpu_blocks=1000,
        engines=2,
        kv_cache_usage=0.25,
        running=4,
        waiting=2,
        prefix_queries=1000,
        prefix_hits=400,
        prompt_tokens=1200,
    )
    load = await make(fake).load()
    assert load.used_tokens == 8000  # 0.25 * 16_000 per engine, two engines
    assert load.running_requests == 4
    assert load.waiting_requests == 2
    assert load.cache_hit_rate == pytest.approx(0.4)
    assert load.cached_tokens_total == pytest.approx(400)
    assert load.prompt_tokens_total == pytest.approx(1200)


def test_decorate_adds_request_id_and_header_priority_only_when_enabled() -> None:
    hints = RequestHints(program_id="p", request_id="p:1", priority=3)
    plain = make(FakeVLLM())
    assert plain.decorate("/v1/completions", {}, hints) == {"request_id": "p:1"}
    assert plain.request_headers(hints) == {"X-Request-Id": "p:1"}
    prio = make(FakeVLLM(), priority_scheduling=True)
    # the contract's "higher runs first" becomes vLLM's "lower runs first"
    assert prio.decorate("/v1/completions", {}, hints) == {"request_id": "p:1", "priority": -3}
    paused = RequestHints(program_id="q", request_id="q:1", priority=3 - 1000)
    sent_active = prio.decorate("/v1/completions", {}, hints)["priority"]
    sent_paused = prio.decorate("/v1/completions", {}, paused)["priority"]
    assert sent_active < sent_paused  # vLLM schedules the active program first


async def test_abort_and_release_send_nothing() -> None:
    fake = FakeVLLM()
    backend = make(fake)
    await backend.abort("p:1")
    await backend.release_program("p", None, None)
    assert fake.calls == []


async def test_garbled_metrics_are_unavailable_not_a_crash() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy error page</html>\n")

    backend = VLLMBackend(
        "v", "http://v", httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(BackendUnavailable, match="v"):
        await backend.probe()
