"""End to end: the official ``openai`` client, through the real scheduler service, to TWO real
``llama-server`` engines (SmolLM2-135M on CPU).

What a user relies on, checked against real parts:

* chat completions work through the proxy, streaming and not; the stream carries a usage chunk
  only when the client asked for one (the proxy asks the engine for it either way);
* every request is attributed to its program (``GET /v1/programs``: requests and tokens equal
  to what the engine reported), and an untagged request passes without joining any program;
* cached tokens are reported; a program's second turn lands on the engine that served its
  first and reuses the prefix (more than 90% of the shared prefix reported cached), while a
  second program is placed on the other engine;
* a client that leaves mid-stream stops the engine's work and finishes the request: the
  program does not stay "reasoning".

Prompts are a few hundred tokens and ``max_tokens`` is at most 8 (the engine prefills about
130 tokens/s and decodes about 50 tokens/s on these 2-core machines), except in the
disconnect test, which asks for a long answer it never waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from thunder_testkit import until

pytestmark = [pytest.mark.llama, pytest.mark.slow]

MODEL = "smollm2"
READY_TIMEOUT_S = 60.0
"""The backend monitor probes each engine right after start-up; 60 s tolerates a loaded host."""


def _system_prompt(topic: str) -> str:
    """About 250 tokens of text unique to one program (its cacheable prefix)."""
    sentence = (f"You are an assistant for the {topic} team. Answer briefly, cite the {topic} "
                f"handbook, and never invent facts about {topic}. ")
    return sentence * 9


def _start(llama_engines: Callable[..., list[Any]], scheduler_service: Callable[..., Any]
           ) -> tuple[Any, list[Any], openai.OpenAI, httpx.Client]:
    engines = llama_engines(n=2)
    service = scheduler_service(backends=[f"llamacpp={engine.url}" for engine in engines])
    admin = httpx.Client(base_url=service.url, timeout=30.0)

    def both_healthy() -> bool:
        ready = admin.get("/ready")
        backends = ready.json().get("backends", {}) if ready.status_code == 200 else {}
        return len(backends) == 2 and all(b["healthy"] for b in backends.values())

    until(both_healthy, timeout_s=READY_TIMEOUT_S, interval_s=0.2, what="both engines healthy")
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0,
                           timeout=120.0)
    return service, engines, client, admin


def _program(admin: httpx.Client, program_id: str) -> dict[str, Any]:
    response = admin.get(f"/v1/programs/{program_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _chat(client: openai.OpenAI, program_id: str, messages: list[dict[str, str]]
          ) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0,  # type: ignore[arg-type]
        extra_headers={"X-Thunder-Program-Id": program_id},
    )


def test_second_turn_lands_on_the_same_engine_and_reuses_its_prefix(
    llama_engines: Callable[..., list[Any]], scheduler_service: Callable[..., Any]
) -> None:
    _, _, client, admin = _start(llama_engines, scheduler_service)

    turns: dict[str, list[dict[str, str]]] = {}
    first: dict[str, openai.types.chat.ChatCompletion] = {}
    for program_id, topic in (("e2e-alpha", "billing"), ("e2e-beta", "shipping")):
        turns[program_id] = [
            {"role": "system", "content": _system_prompt(topic)},
            {"role": "user", "content": f"What does the {topic} team do?"},
        ]
        first[program_id] = _chat(client, program_id, turns[program_id])
        assert first[program_id].choices[0].message.content
    views = {pid: _program(admin, pid) for pid in first}
    assert views["e2e-alpha"]["backend"] is not None
    assert views["e2e-alpha"]["backend"] != views["e2e-beta"]["backend"], views

    # second turn, non-streaming: the whole first turn is a prefix of this prompt.
    alpha = turns["e2e-alpha"]
    alpha += [{"role": "assistant", "content": first["e2e-alpha"].choices[0].message.content or ""},
              {"role": "user", "content": "And who leads it?"}]
    second = _chat(client, "e2e-alpha", alpha)
    shared_tokens = first["e2e-alpha"].usage.prompt_tokens  # type: ignore[union-attr]
    assert shared_tokens > 150
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert cached > 0.9 * shared_tokens, (cached, shared_tokens)
    assert _program(admin, "e2e-alpha")["backend"] == views["e2e-alpha"]["backend"]

    # second turn, streaming with usage asked for: cached tokens arrive in the usage chunk.
    beta = turns["e2e-beta"]
    beta += [{"role": "assistant", "content": first["e2e-beta"].choices[0].message.content or ""},
             {"role": "user", "content": "And who leads it?"}]
    stream = client.chat.completions.create(
        model=MODEL, messages=beta, max_tokens=8, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        extra_headers={"X-Thunder-Program-Id": "e2e-beta"},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens_details is not None
    shared_tokens = first["e2e-beta"].usage.prompt_tokens  # type: ignore[union-attr]
    assert (usage.prompt_tokens_details.cached_tokens or 0) > 0.9 * shared_tokens
    assert _program(admin, "e2e-beta")["backend"] == views["e2e-beta"]["backend"]

    # the service's accounting agrees with what the engine reported to the client.
    view = _program(admin, "e2e-alpha")
    assert view["requests"] == 2
    assert view["prompt_tokens"] == shared_tokens_of(first["e2e-alpha"], second)
    assert view["cached_tokens"] >= cached


def shared_tokens_of(*completions: openai.types.chat.ChatCompletion) -> int:
    return sum(c.usage.prompt_tokens for c in completions if c.usage is not None)


def test_streams_pass_through_and_requests_are_attributed(
    llama_engines: Callable[..., list[Any]], scheduler_service: Callable[..., Any]
) -> None:
    _, engines, client, admin = _start(llama_engines, scheduler_service)
    messages = [{"role": "system", "content": _system_prompt("payroll")},
                {"role": "user", "content": "Say hello."}]

    # streaming without asking for usage: no usage-only chunk reaches the client...
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0, stream=True,  # type: ignore[arg-type]
        extra_headers={"X-Thunder-Program-Id": "e2e-stream"},
    )
    chunks = list(stream)
    assert chunks, "empty stream"
    assert all(chunk.choices for chunk in chunks), "a usage-only chunk leaked to the client"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    # ...but the proxy asked the engine for it, so the program's tokens are known.
    view = _program(admin, "e2e-stream")
    assert view["requests"] == 1
    assert view["prompt_tokens"] > 150 and view["completion_tokens"] > 0
    assert view["phase"] == "acting"  # the LLM call is over

    # non-streaming, program id in the body (ThunderAgent's convention), via extra_body.
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0,  # type: ignore[arg-type]
        extra_body={"program_id": "e2e-whole"},
    )
    assert whole.usage is not None
    view = _program(admin, "e2e-whole")
    assert (view["requests"], view["prompt_tokens"], view["completion_tokens"]) == (
        1, whole.usage.prompt_tokens, whole.usage.completion_tokens)

    # an untagged request is served and joins no program.
    before = {p["program_id"] for p in admin.get("/v1/programs").json()["programs"]}
    untagged = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4)
    assert untagged.choices[0].text is not None
    after = {p["program_id"] for p in admin.get("/v1/programs").json()["programs"]}
    assert after == before == {"e2e-stream", "e2e-whole"}

    # a model name is the engine's to judge: the scheduler answers as llama-server does.
    odd = {"model": "no-such-model", "messages": messages, "max_tokens": 1}
    direct = httpx.post(f"{engines[0].url}/v1/chat/completions", json=odd, timeout=60)
    assert admin.post("/v1/chat/completions", json=odd).status_code == direct.status_code
    # bad input reaches no engine and gets a JSON reason.
    bad = admin.post("/v1/chat/completions", content=b"{oops",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]


def test_client_leaving_mid_stream_stops_the_engine_and_finishes_the_request(
    llama_engines: Callable[..., list[Any]], scheduler_service: Callable[..., Any]
) -> None:
    _, engines, client, admin = _start(llama_engines, scheduler_service)
    stream = client.chat.completions.create(
        model=MODEL, temperature=0, stream=True, max_tokens=2000,
        messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}],
        extra_headers={"X-Thunder-Program-Id": "e2e-leaver"},
    )
    iterator = iter(stream)
    next(iterator)  # generation is running on an engine
    assert _program(admin, "e2e-leaver")["phase"] == "reasoning"
    stream.close()  # the client leaves (closes its connection)

    # 2000 tokens at ~50 tokens/s would take 40 s: both must happen long before.
    def aborted() -> tuple[dict[str, Any], list[bool]] | None:
        view = _program(admin, "e2e-leaver")
        busy = [_processing(engine.url) for engine in engines]
        idle = view["phase"] == "acting" and view["in_flight_requests"] == 0 and not any(busy)
        return (view, busy) if idle else None

    view, _ = until(aborted, timeout_s=15.0, interval_s=0.2, what="the abort to reach the engine")
    assert view["requests"] == 1


def _processing(engine_url: str) -> bool:
    """Whether any slot of the engine is still generating (llama-server ``GET /slots``)."""
    slots = httpx.get(f"{engine_url}/slots", timeout=10.0).json()
    return any(slot.get("is_processing") for slot in slots)
