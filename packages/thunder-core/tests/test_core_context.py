"""The current-program contextvar and the httpx hook that tags plain openai client requests."""

from __future__ import annotations

import asyncio

import httpx
import openai

from thunder_core import PROGRAM_ID_HEADER, current_program_id, program, program_headers

COMPLETION = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _recording_transport(seen: list[str | None]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(PROGRAM_ID_HEADER))
        return httpx.Response(200, json=COMPLETION)
    return httpx.MockTransport(handler)


def test_plain_openai_client_gets_the_header_inside_program_only() -> None:
    seen: list[str | None] = []
    client = openai.OpenAI(
        base_url="http://scheduler.test/v1", api_key="k",
        http_client=httpx.Client(transport=_recording_transport(seen)),
    )
    with program("agent-1"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert seen == ["agent-1", None]


def test_explicit_header_is_not_overwritten() -> None:
    seen: list[str | None] = []
    http = httpx.Client(transport=_recording_transport(seen))
    with program("outer"):
        http.post("http://x.test/", headers={PROGRAM_ID_HEADER: "explicit"}, json={})
    assert seen == ["explicit"]


async def test_concurrent_async_programs_keep_their_identities() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(PROGRAM_ID_HEADER))
        return httpx.Response(200, json=COMPLETION)

    client = openai.AsyncOpenAI(
        base_url="http://scheduler.test/v1", api_key="k",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )

    async def agent(i: int) -> str | None:
        with program(f"agent-{i}"):
            await asyncio.sleep(0.001 * (i % 3))
            response = await client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": str(i)}]
            )
            assert response.http_request.headers[PROGRAM_ID_HEADER] == f"agent-{i}"
            return current_program_id()

    results = await asyncio.gather(*(agent(i) for i in range(50)))
    assert results == [f"agent-{i}" for i in range(50)]
    assert sorted(seen, key=str) == sorted((f"agent-{i}" for i in range(50)), key=str)
    assert current_program_id() is None


def test_program_headers_helper() -> None:
    assert program_headers("p") == {PROGRAM_ID_HEADER: "p"}
    assert program_headers() == {}
    with program("q"):
        assert program_headers() == {PROGRAM_ID_HEADER: "q"}


def test_identity_goes_only_to_the_configured_scheduler(monkeypatch: object) -> None:
    import pytest

    from thunder_core import forget_schedulers, register_scheduler

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[str(request.url)] = request.headers.get(PROGRAM_ID_HEADER)
        return httpx.Response(200, json={})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    register_scheduler("http://scheduler.test:8300")
    with program("agent-1"):
        http.post("http://scheduler.test:8300/v1/chat/completions", json={})
        http.post("https://api.smith.langchain.com/runs", json={})
        http.post("http://scheduler.test:9999/other-port", json={})
    assert seen == {"http://scheduler.test:8300/v1/chat/completions": "agent-1",
                    "https://api.smith.langchain.com/runs": None,
                    "http://scheduler.test:9999/other-port": None}
    forget_schedulers()
    monkeypatch.setenv("THUNDER_SCHEDULER_URL", "http://env-scheduler.test/v1")
    with program("agent-2"):
        http.post("http://env-scheduler.test/v1/chat/completions", json={})
        http.post("http://third-party.test/api", json={})
    assert seen["http://env-scheduler.test/v1/chat/completions"] == "agent-2"
    assert seen["http://third-party.test/api"] is None
    forget_schedulers()
    monkeypatch.delenv("THUNDER_SCHEDULER_URL")
    register_scheduler("http://127.0.0.1:8300")
    with program("agent-3"):
        http.post("http://localhost:8300/v1/chat/completions", json={})
    assert seen["http://localhost:8300/v1/chat/completions"] == "agent-3"
