"""The LLM hook: what the toggle changes in the litellm kwargs the SDK builds (socket-free)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from collections.abc import Iterator
from typing import Any

import pytest
from openhands.sdk import LLM

import thunder_openhands
from thunder_core.contract import LITELLM_SESSION_HEADER, PROGRAM_ID_HEADER
from thunder_openhands.routing import HOOKED_METHODS, RouteConfig, route_kwargs
from thunder_testkit.emitter import RecordingEmitter


@pytest.fixture
def enabled() -> Iterator[None]:
    thunder_openhands.enable("http://127.0.0.1:9/", emitter=RecordingEmitter())
    try:
        yield
    finally:
        thunder_openhands.disable()


def _kwargs(llm: LLM, session: str | None) -> dict[str, Any]:
    extra = {"extra_headers": {LITELLM_SESSION_HEADER: session}} if session else {}
    return llm._prepare_transport_kwargs(
        messages=[{"role": "user", "content": "hi"}], enable_streaming=False, **extra
    )


def test_conversation_requests_get_our_header_and_go_to_the_scheduler(enabled: None) -> None:
    llm = LLM(model="openai/smollm2", base_url="http://engine:8080/v1", api_key="k",
              usage_id="t")
    kwargs = _kwargs(llm, "conv-1")
    assert kwargs["api_base"] == "http://127.0.0.1:9/v1"
    assert kwargs["extra_headers"] == {LITELLM_SESSION_HEADER: "conv-1",
                                       PROGRAM_ID_HEADER: "conv-1"}
    assert kwargs["api_key"] == "k" and kwargs["model"] == "smollm2"


def test_requests_outside_a_conversation_are_routed_but_not_tagged(enabled: None) -> None:
    llm = LLM(model="openai/smollm2", base_url="http://engine:8080/v1", usage_id="t")
    kwargs = _kwargs(llm, None)
    assert kwargs["api_base"] == "http://127.0.0.1:9/v1"
    assert PROGRAM_ID_HEADER not in (kwargs.get("extra_headers") or {})


def test_non_openai_providers_keep_their_endpoint_but_are_tagged(enabled: None) -> None:
    llm = LLM(model="anthropic/claude-sonnet-4-5", api_key="k", usage_id="t")
    kwargs = _kwargs(llm, "conv-2")
    assert kwargs.get("api_base") is None
    assert kwargs["extra_headers"][PROGRAM_ID_HEADER] == "conv-2"


def test_responses_api_kwargs_are_hooked_too(enabled: None) -> None:
    llm = LLM(model="openai/gpt-5-mini", base_url="http://engine/v1", usage_id="t")
    kwargs = llm._build_responses_call_kwargs(
        [], None, None, {"extra_headers": {LITELLM_SESSION_HEADER: "conv-3"}}
    )
    assert kwargs["api_base"] == "http://127.0.0.1:9/v1"
    assert kwargs["extra_headers"][PROGRAM_ID_HEADER] == "conv-3"


def test_disable_restores_the_sdk_and_an_explicit_header_wins() -> None:
    llm = LLM(model="openai/smollm2", base_url="http://engine:8080/v1", usage_id="t")
    before = _kwargs(llm, "conv-4")
    thunder_openhands.enable("http://127.0.0.1:9", emitter=RecordingEmitter(), route=False)
    try:
        tagged = _kwargs(llm, "conv-4")
        assert tagged["api_base"] == "http://engine:8080/v1"   # route=False: tag only
        assert tagged["extra_headers"][PROGRAM_ID_HEADER] == "conv-4"
    finally:
        thunder_openhands.disable()
    assert _kwargs(llm, "conv-4") == before
    assert all(not hasattr(getattr(LLM, name), "__thunder_original__") for name in HOOKED_METHODS)
    mine = {"extra_headers": {LITELLM_SESSION_HEADER: "a", PROGRAM_ID_HEADER: "b"}}
    routed = route_kwargs(mine, RouteConfig(None), "openai")
    assert routed["extra_headers"][PROGRAM_ID_HEADER] == "b"


def test_enable_rejects_bad_urls_and_a_second_scheduler(enabled: None) -> None:
    with pytest.raises(RuntimeError, match="already enabled"):
        thunder_openhands.enable("http://127.0.0.1:10")
    thunder_openhands.enable("http://127.0.0.1:9/v1")    # same scheduler: a no-op
    thunder_openhands.disable()
    with pytest.raises(ValueError, match="http"):
        thunder_openhands.enable("127.0.0.1:9")
    with pytest.raises(ValueError, match="THUNDER_SCHEDULER_URL"):
        os.environ.pop("THUNDER_SCHEDULER_URL", None)
        thunder_openhands.enable()
