"""The tool-aware prompt split, end to end on loopback: the official openai client, the real
scheduler service, and two scripted OpenAI-compatible engines (``thunder_testkit.openai_server``,
real HTTP servers registered as SGLang backends, with a block prefix cache of their own).

When a program's response ends in tool calls, the scheduler prefills the next prompt's known
prefix (its messages plus the assistant's tool-call message) on the engine that served it, so
the next request, which carries the tool result, finds that prefix cached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from openai import OpenAI

from thunder_core.contract import PROGRAM_ID_HEADER
from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import RunningService, start_service_thread

SYSTEM = "You are a careful assistant that checks every step twice. " * 8
WRITE = FakeToolCall("write", {"path": "notes.txt", "text": "a long line of notes " * 20},
                     id="call_write_1")


class Fleet:
    def __init__(self, engines: list[ScriptedOpenAI], service: RunningService) -> None:
        self.engines = engines
        self.service = service
        self.client = OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0)

    def prefills(self, engine: ScriptedOpenAI) -> list[dict[str, Any]]:
        """Prefill-only requests an engine received (one output token, unstreamed)."""
        return [r["body"] for r in engine.prefills]

    def splits(self, result: str) -> float:
        text = httpx.get(f"{self.service.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(f'thunder_prompt_splits_total{{result="{result}"}}'):
                return float(line.split()[-1])
        return 0.0

    def serving(self, program_id: str) -> ScriptedOpenAI:
        found = [e for e in self.engines
                 if any(r["headers"].get(PROGRAM_ID_HEADER) == program_id
                        or str(r["body"].get("rid", "")).startswith(program_id)
                        for r in e.requests)]
        assert len(found) == 1, "a program's requests all go to one engine"
        return found[0]


@contextmanager
def fleet(script: list[Any], **settings: Any) -> Iterator[Fleet]:
    engines = [ScriptedOpenAI(), ScriptedOpenAI()]
    for engine in engines:
        engine.script = script
        engine.start()
    service = start_service_thread(load_settings(
        {"backends": [f"sglang={e.url}" for e in engines], **settings}))
    try:
        wait_http(f"{service.url}/ready", timeout_s=20)
        yield Fleet(engines, service)
    finally:
        service.stop()
        for engine in engines:
            engine.stop()


def _first_turn(fleet: Fleet, program_id: str, stream: bool) -> tuple[list[dict[str, Any]],
                                                                      dict[str, Any] | None]:
    """One request of ``program_id``; its messages and the assistant tool-call message."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": "write my notes down"}]
    headers = {PROGRAM_ID_HEADER: program_id}
    if not stream:
        raw = fleet.client.chat.completions.with_raw_response.create(
            model="scripted", messages=messages, extra_headers=headers)  # type: ignore[arg-type]
        message = json.loads(raw.http_response.text)["choices"][0]["message"]
        return messages, (message if message.get("tool_calls") else None)
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in fleet.client.chat.completions.create(
        model="scripted", messages=messages, stream=True,  # type: ignore[arg-type]
        extra_headers=headers,
    ):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        for part in delta.tool_calls or ():
            call = calls.setdefault(part.index, {"id": part.id, "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
            if part.function is not None:
                call["function"]["name"] += part.function.name or ""
                call["function"]["arguments"] += part.function.arguments or ""
    if not calls:
        return messages, None
    return messages, {"role": "assistant", "content": "".join(content),
                      "tool_calls": [calls[i] for i in sorted(calls)]}


def _second_turn(fleet: Fleet, program_id: str, messages: list[dict[str, Any]],
                 assistant: dict[str, Any]) -> int:
    """The request that carries the tool result; the prompt tokens it found cached."""
    tool = {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "ok"}
    response = fleet.client.chat.completions.create(
        model="scripted", messages=[*messages, assistant, tool],  # type: ignore[list-item]
        extra_headers={PROGRAM_ID_HEADER: program_id})
    assert response.usage is not None and response.usage.prompt_tokens_details is not None
    return response.usage.prompt_tokens_details.cached_tokens or 0


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_tool_call_response_prefills_the_next_prefix_on_its_engine(stream: bool) -> None:
    cached: dict[bool, int] = {}
    for split in (True, False):
        with fleet([[WRITE], "done"], prompt_split=split) as f:
            messages, assistant = _first_turn(f, "agent-1", stream)
            assert assistant is not None
            engine = f.serving("agent-1")
            other = next(e for e in f.engines if e is not engine)
            if split:
                until(lambda e=engine: f.prefills(e) or None, timeout_s=10,
                      what="the prompt split's prefill")
                [prefill] = f.prefills(engine)
                # the extended prefix: the request's messages and the tool-call message
                assert prefill["messages"] == [*messages, assistant]
                assert not prefill.get("stream")
                assert f.prefills(other) == []
                assert f.splits("sent") == 1
            cached[split] = _second_turn(f, "agent-1", messages, assistant)
            if not split:
                assert f.prefills(engine) == f.prefills(other) == []
                assert f.splits("sent") == 0
    # the prefill put the tool-call message in the cache: the next request finds it there
    assert cached[True] > cached[False]


@pytest.mark.slow
def test_no_prefill_for_a_response_without_tool_calls() -> None:
    with fleet(["just text"]) as f:
        _, assistant = _first_turn(f, "chatty", stream=True)
        assert assistant is None
        # a program whose response does end in tool calls, after it: its prefill arriving
        # means the first program's response was decided on before
        for engine in f.engines:
            engine.script = [[WRITE], "done"]
        _first_turn(f, "caller", stream=True)
        until(lambda: f.splits("sent") == 1 or None, timeout_s=10, what="the caller's split")
        prefills = [p for e in f.engines for p in f.prefills(e)]
        assert [p["messages"][1]["content"] for p in prefills] == ["write my notes down"]
        assert all(p["messages"][-1]["role"] == "assistant" for p in prefills)
        assert f.splits("sent") == 1 and f.splits("cached") == 0


@pytest.mark.slow
def test_no_prefill_while_the_prefix_is_still_cached() -> None:
    """The same response twice (a client that retried): the prefix the first split prefilled
    is still resident on the engine, so the second one sends nothing."""
    with fleet([[WRITE], "done"]) as f:
        _first_turn(f, "retry", stream=False)
        until(lambda: f.splits("sent") == 1 or None, timeout_s=10, what="the first split")
        _first_turn(f, "retry", stream=False)
        until(lambda: f.splits("cached") == 1 or None, timeout_s=10, what="the second split")
        assert sum(len(f.prefills(e)) for e in f.engines) == 1
        assert f.splits("sent") == 1


def _langgraph_cache_read(split: bool) -> int:
    """Run a wrapped hand-built agent once; the cached prompt tokens of its last model call."""
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from thunder_langgraph import wrap

    with fleet([[WRITE], "done"], prompt_split=split) as f:

        @tool
        def write(path: str, text: str) -> str:
            """Write text to a file."""
            if split:  # the tool runs while the engine prefills the next prefix: wait for
                # that prefill (it ends in the tool-call message), not for any one-token
                # request (the wrapper's hints send others, e.g. the shared-prefix warm-up)
                until(lambda: any(p["messages"][-1].get("tool_calls")
                                  for e in f.engines for p in f.prefills(e)) or None,
                      timeout_s=10, what="the prompt split's prefill")
            return "ok"

        model = ChatOpenAI(model="scripted", base_url=f"{f.service.url}/v1",
                           api_key="unused", max_retries=0).bind_tools([write])

        def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("agent", agent)
        graph.add_node("tools", ToolNode([write]))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        app = wrap(graph.compile(), scheduler_url=f.service.url)
        result = app.invoke({"messages": [("system", SYSTEM), ("user", "write it")]},
                            {"configurable": {"thunder_program_id": "lg"}})
        app.flush()
        last = [m for m in result["messages"] if isinstance(m, AIMessage)][-1]
        assert last.content == "done" and last.usage_metadata is not None
        return int(last.usage_metadata["input_token_details"]["cache_read"])


@pytest.mark.slow
def test_a_langgraph_agent_finds_its_tool_call_prefix_cached() -> None:
    """A wrapped LangGraph agent (real ChatOpenAI, streaming dispatch on): the message that
    ChatOpenAI sends back for the tool call renders like the one the scheduler prefilled, so
    the second model call reads it from the cache."""
    assert _langgraph_cache_read(True) > _langgraph_cache_read(False)
