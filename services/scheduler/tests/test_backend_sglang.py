"""SGLangBackend against a MockTransport fake shaped like SGLang 0.5.23's answers."""

from __future__ import annotations

import httpx
import pytest

from thunder_scheduler.backends import BackendUnavailable, RequestHints
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_testkit.engines import FakeSGLang


def make(fake: FakeSGLang) -> SGLangBackend:
    return SGLangBackend(
        "gpu1", "http://gpu1:30000/", httpx.AsyncClient(transport=fake.transport())
    )


async def test_probe_reads_pool_and_page_size() -> None:
    fake = FakeSGLang(max_total_num_tokens=123_456, page_size=32)
    info = await make(fake).probe()
    assert info.capacity_tokens == 123_456
    assert info.page_size_tokens == 32
    assert info.models == ("Qwen/Qwen3-8B",)
    assert info.max_context_tokens == 40_955  # context_length None -> max_req_input_len


async def test_probe_sums_capacity_over_dp_ranks() -> None:
    info = await make(FakeSGLang(max_total_num_tokens=50_000, dp_size=4)).probe()
    assert info.capacity_tokens == 200_000


async def test_probe_falls_back_to_max_total_times_dp_size_without_internal_states() -> None:
    fake = FakeSGLang(max_total_num_tokens=1000, dp_size=2)
    original = fake.route

    def without_states(request: httpx.Request, path: str, body: object) -> httpx.Response:
        response = original(request, path, body)
        if path == "/server_info":
            data = response.json()
            del data["internal_states"]
            return httpx.Response(200, json=data)
        return response

    fake.route = without_states  # type: ignore[method-assign]
    assert (await make(fake).probe()).capacity_tokens == 2000


async def test_probe_uses_deprecated_alias_when_server_info_missing() -> None:
    fake = FakeSGLang(status_overrides={"/server_info": 404})
    original = fake.route

    def alias(request: httpx.Request, path: str, body: object) -> httpx.Response:
        return original(request, "/server_info" if path == "/get_server_info" else path, body)

    fake.route = alias  # type: ignore[method-assign]
    assert (await make(fake).probe()).capacity_tokens == fake.max_total_num_tokens


async def test_probe_without_capacity_fields_is_unavailable_with_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"page_size": 1, "version": "0.5.23"})

    backend = SGLangBackend(
        "x", "http://x", httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(BackendUnavailable, match="max_total_num_tokens"):
        await backend.probe()


async def test_probe_updates_capabilities_from_server_flags() -> None:
    backend = make(FakeSGLang())
    assert not backend.capabilities.cached_tokens_in_usage
    await backend.probe()
    assert backend.capabilities.cached_tokens_in_usage  # fake runs --enable-cache-report
    assert not backend.capabilities.request_priority
    assert not backend.capabilities.sessions  # no --enable-session-radix-cache


@pytest.mark.parametrize("low_first", [False, True])
async def test_priority_follows_the_servers_queue_order(low_first: bool) -> None:
    fake = FakeSGLang(enable_priority_scheduling=True, schedule_low_priority_values_first=low_first)
    backend = make(fake)
    await backend.probe()
    assert backend.capabilities.request_priority
    active = RequestHints(program_id="a", request_id="a:1", priority=0)
    paused = RequestHints(program_id="b", request_id="b:1", priority=-1000)
    sent_active = backend.decorate("/generate", {}, active)["priority"]
    sent_paused = backend.decorate("/generate", {}, paused)["priority"]
    if low_first:  # lower values run first: the active program must get the lower value
        assert sent_active < sent_paused and sent_paused == 1000
    else:  # SGLang's default: higher values run first
        assert sent_active > sent_paused and sent_paused == -1000


async def test_sessions_capability_is_the_session_radix_cache_flag() -> None:
    backend = make(FakeSGLang(enable_session_radix_cache=True))
    await backend.probe()
    assert backend.capabilities.sessions
    hints = RequestHints(program_id="p1", request_id="p1:3", session_id="s1")
    assert backend.decorate("/generate", {}, hints)["session_id"] == "s1"


async def test_load_sums_ranks_and_reads_metrics_counters() -> None:
    fake = FakeSGLang(
        dp_size=2,
        running_per_rank=3,
        waiting_per_rank=1,
        used_tokens_per_rank=4000,
        cache_hit_rate=0.5,
        prompt_tokens_total=10_000,
        cached_tokens_total=6_000,
    )
    load = await make(fake).load()
    assert load.running_requests == 6
    assert load.waiting_requests == 2
    assert load.used_tokens == 8000
    assert load.cache_hit_rate == pytest.approx(0.5)
    assert load.prompt_tokens_total == pytest.approx(10_000)
    assert load.cached_tokens_total == pytest.approx(6_000)
    assert ("GET", "/v1/loads", None) in fake.calls


async def test_load_without_metrics_flag_leaves_counters_unknown() -> None:
    fake = FakeSGLang(running_per_rank=2, status_overrides={"/metrics": 404})
    load = await make(fake).load()
    assert load.running_requests == 2
    assert load.prompt_tokens_total is None and load.cached_tokens_total is None


async def test_decorate_sets_rid_and_only_allowed_extras() -> None:
    backend = make(FakeSGLang())
    await backend.probe()
    hints = RequestHints(program_id="p1", request_id="p1:3", priority=5, session_id="s1")
    body = backend.decorate("/v1/chat/completions", {"model": "m"}, hints)
    assert body["rid"] == "p1:3"
    assert "priority" not in body  # server not started with --enable-priority-scheduling
    assert "session_id" not in body  # nor with --enable-session-radix-cache
    assert backend.request_headers(hints) == {}


async def test_abort_posts_rid() -> None:
    fake = FakeSGLang()
    await make(fake).abort("p1:7")
    assert ("POST", "/abort_request", {"rid": "p1:7"}) in fake.calls


async def test_sessions_open_and_close() -> None:
    fake = FakeSGLang()
    backend = make(fake)
    assert await backend.open_session("prog-1") == "prog-1"
    assert fake.open_sessions == {"prog-1"}
    await backend.release_program("prog-1", "prog-1", None)
    assert fake.open_sessions == set()
    await backend.release_program("prog-1", "never-opened", None)  # no error


async def test_engine_5xx_surfaces_as_unavailable_with_status() -> None:
    fake = FakeSGLang(status_overrides={"/server_info": 503})
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        await make(fake).probe()


async def test_garbled_loads_are_unavailable_not_a_crash() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/loads":
            return httpx.Response(200, json={"loads": [{"num_running_reqs": "many"}]})
        return httpx.Response(200, text="garbage{{{ not prometheus")

    backend = SGLangBackend(
        "x", "http://x", httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(BackendUnavailable, match="non-numeric"):
        await backend.load()
