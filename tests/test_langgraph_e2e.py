"""thunder-langgraph end to end: real LangGraph graphs, through the real scheduler service.

Every test runs twice: with streaming tool dispatch on (the default: model calls stream and
tools start when their arguments close) and off; the results must not differ.

The model is the scripted tool-calling fake (``thunder_testkit.openai_server``, a real loopback
HTTP server named as a fake) registered with the scheduler as an SGLang backend, so tool flows
are deterministic. Assertions are on what the scheduler saw (GET /v1/programs).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Send, interrupt

from thunder_core.launcher import wait_http
from thunder_langgraph import ThunderMiddleware, wrap
from thunder_langgraph.dispatch import STREAMING_DISPATCH_ENV
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import RunningService, start_service_thread

SYSTEM = "You are a careful assistant that checks every step twice. " * 12


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"tool failed: {reason}")


class Inner(TypedDict):
    topic: str
    answers: Annotated[list[str], operator.add]


class Outer(TypedDict):
    topics: list[str]
    answers: Annotated[list[str], operator.add]


class Stack:
    def __init__(self, fake: ScriptedOpenAI, service: RunningService) -> None:
        self.fake = fake
        self.service = service
        self.url = service.url
        self.http = httpx.Client(base_url=service.url, timeout=10)

    def model(self, **kwargs: Any) -> ChatOpenAI:
        return ChatOpenAI(model="scripted", base_url=f"{self.url}/v1", api_key="unused",
                          max_retries=0, **kwargs)

    def program(self, program_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/programs/{program_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def programs(self, framework: str = "langgraph") -> list[dict[str, Any]]:
        rows = self.http.get("/v1/programs").json()["programs"]
        return [row for row in rows if row["framework"] == framework]

    def wait_terminated(self, program_id: str, timeout_s: float = 10) -> dict[str, Any]:
        def terminated() -> dict[str, Any] | None:
            row = self.program(program_id)
            return row if row["status"] == "terminated" else None

        return until(terminated, timeout_s=timeout_s, what=f"{program_id} to terminate")


@pytest.fixture(autouse=True, params=[True, False], ids=["dispatch-on", "dispatch-off"])
def streaming_dispatch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every test runs with streaming tool dispatch on (the default) and off."""
    monkeypatch.setenv(STREAMING_DISPATCH_ENV, "1" if request.param else "0")
    return bool(request.param)


@pytest.fixture
def stack() -> Iterator[Stack]:
    fake = ScriptedOpenAI()
    fake.start()
    service = start_service_thread(load_settings({"backends": [f"sglang={fake.url}"]}))
    wait_http(f"{service.url}/ready", timeout_s=20)
    try:
        yield Stack(fake, service)
    finally:
        service.stop()
        fake.stop()


def _pid(run: str) -> dict[str, Any]:
    return {"configurable": {"thunder_program_id": run}}


def test_create_agent_react_run_is_one_program_with_its_tool_events(
    stack: Stack, caplog: pytest.LogCaptureFixture,
) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 2, "b": 3})], "five"]
    app = wrap(create_agent(stack.model(), [add], system_prompt=SYSTEM), scheduler_url=stack.url,
               priority=3,
               tags={"team": "a"})
    with caplog.at_level(logging.WARNING, logger="thunder_core.emitter"):
        result = app.invoke({"messages": [{"role": "user", "content": "2+3?"}]}, _pid("react-1"))
        assert result["messages"][-1].content == "five"
        assert app.flush()
    # every lifecycle event, the cache hints included, was accepted by the real API
    assert not [r for r in caplog.records if "not delivered" in r.getMessage()]
    row = stack.wait_terminated("react-1")
    assert row["status"] == "terminated" and row["end_status"] == "ok"
    assert row["framework"] == "langgraph" and row["priority"] == 3 and row["tags"] == {"team": "a"}
    assert row["requests"] == 2          # both model calls were attributed to this program
    assert row["tool_calls"] == 1
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["cached_tokens"] > 0      # the second call re-sent the first call's prefix


def test_default_identity_is_a_fresh_program_per_invocation(stack: Stack) -> None:
    stack.fake.script = ["hello"]
    app = wrap(create_agent(stack.model(), []), scheduler_url=stack.url)
    for _ in range(3):
        app.invoke({"messages": [{"role": "user", "content": "hi"}]})
    assert app.flush()
    rows = stack.programs()
    assert len(rows) == 3
    assert len({row["program_id"] for row in rows}) == 3
    assert all(row["requests"] == 1 for row in rows)


def _tool_graph(stack: Stack) -> Any:
    model = stack.model().bind_tools([add, multiply])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([add, multiply]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def test_state_graph_with_tool_node_parallel_calls_and_every_stream_mode(
    stack: Stack, streaming_dispatch: bool,
) -> None:
    stack.fake.script = [
        [FakeToolCall("add", {"a": 1, "b": 2}), FakeToolCall("multiply", {"a": 3, "b": 4})],
        "done",
    ]
    app = wrap(_tool_graph(stack), scheduler_url=stack.url)
    for mode in ("values", "updates", "messages", "debug", "custom"):
        chunks = list(app.stream({"messages": [("user", "go")]}, _pid(f"sg-{mode}"),
                                 stream_mode=mode))
        assert chunks or mode == "custom"
    assert app.flush()
    for mode in ("values", "updates", "messages", "debug", "custom"):
        row = stack.wait_terminated(f"sg-{mode}")
        assert (row["requests"], row["tool_calls"], row["end_status"]) == (2, 2, "ok"), mode
    # with dispatch on every model call streamed (the tools were started from the stream);
    # off, only stream_mode="messages" streams, as LangGraph does by itself
    streamed = [bool(r["body"].get("stream")) for r in stack.fake.requests]
    assert streamed == [streaming_dispatch or mode == "messages"
                        for mode in ("values", "updates", "messages", "debug", "custom")
                        for _ in range(2)]


async def test_async_stream_and_astream_events(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 1, "b": 1})], "two"]
    app = wrap(_tool_graph(stack), scheduler_url=stack.url)
    seen = [chunk async for chunk in app.astream({"messages": [("user", "1+1")]},
                                                  _pid("as-1"), stream_mode="updates")]
    assert seen
    kinds = {event["event"] async for event in app.astream_events(
        {"messages": [("user", "1+1")]}, _pid("as-2"), version="v2")}
    assert {"on_tool_start", "on_chat_model_start"} <= kinds
    assert app.flush()
    for pid in ("as-1", "as-2"):
        row = stack.wait_terminated(pid)
        assert (row["requests"], row["tool_calls"], row["end_status"]) == (2, 1, "ok")


async def test_hundred_concurrent_ainvokes_keep_their_identities_apart(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 1, "b": 2})], "three"]
    app = wrap(_tool_graph(stack), scheduler_url=stack.url)

    async def one(i: int) -> Any:
        return await app.ainvoke({"messages": [("user", f"q{i}")]}, _pid(f"c-{i}"))

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert all(r["messages"][-1].content == "three" for r in results)
    assert app.flush(30)
    rows = {row["program_id"]: row for row in stack.programs()}
    assert set(rows) == {f"c-{i}" for i in range(100)}
    for row in rows.values():
        assert (row["requests"], row["tool_calls"]) == (2, 1), row


def test_subgraphs_and_send_fan_out_stay_inside_the_program(stack: Stack) -> None:
    stack.fake.script = ["leaf answer"]
    llm = stack.model()

    def ask(state: Inner) -> dict[str, Any]:
        return {"answers": [str(llm.invoke(state["topic"]).content)]}

    inner = StateGraph(Inner)
    inner.add_node("ask", ask)
    inner.add_edge(START, "ask")
    inner.add_edge("ask", END)
    subgraph = inner.compile()

    def fan_out(state: Outer) -> list[Send]:
        return [Send("worker", {"topic": t, "answers": []}) for t in state["topics"]]

    outer = StateGraph(Outer)
    outer.add_node("worker", subgraph)
    outer.add_conditional_edges(START, fan_out, ["worker"])
    outer.add_edge("worker", END)
    app = wrap(outer.compile(), scheduler_url=stack.url)
    result = app.invoke({"topics": ["a", "b", "c", "d"], "answers": []}, _pid("fan-1"))
    assert len(result["answers"]) == 4
    assert app.flush()
    assert stack.wait_terminated("fan-1")["requests"] == 4
    assert [row["program_id"] for row in stack.programs()] == ["fan-1"]


def test_exception_and_tool_error_end_the_program_with_error(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("explode", {"reason": "disk"})], "unreachable"]

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [stack.model().bind_tools([explode]).invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([explode], handle_tool_errors=False))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = wrap(graph.compile(), scheduler_url=stack.url)
    with pytest.raises(RuntimeError, match="tool failed"):
        app.invoke({"messages": [("user", "go")]}, _pid("err-1"))
    assert app.flush()
    row = stack.wait_terminated("err-1")
    assert row["end_status"] == "error" and row["tool_calls"] == 1
    assert row["current_tool"] is None   # the failed tool was ended too


async def test_cancellation_ends_the_program_as_cancelled(stack: Stack) -> None:
    stack.fake.script = ["late"]
    started = asyncio.Event()

    async def slow(state: MessagesState) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(30)
        return {}

    graph = StateGraph(MessagesState)
    graph.add_node("slow", slow)
    graph.add_edge(START, "slow")
    app = wrap(graph.compile(), scheduler_url=stack.url)
    task = asyncio.create_task(app.ainvoke({"messages": [("user", "x")]}, _pid("cancel-1")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.flush()
    assert stack.wait_terminated("cancel-1")["end_status"] == "cancelled"


def test_interrupt_ends_the_program_and_a_closed_stream_cancels_it(stack: Stack) -> None:
    stack.fake.script = ["before review"]
    llm = stack.model()

    def draft(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    def review(state: MessagesState) -> dict[str, Any]:
        verdict = interrupt("approve?")
        return {"messages": [AIMessage(content=f"review: {verdict}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_node("review", review)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "review")
    app = wrap(graph.compile(checkpointer=InMemorySaver()), scheduler_url=stack.url)
    config = {"configurable": {"thread_id": "t-int", "thunder_program_id": "int-1"}}
    result = app.invoke({"messages": [("user", "write")]}, config)
    assert "__interrupt__" in result
    stream = app.stream({"messages": [("user", "again")]},
                        {"configurable": {"thread_id": "t-2", "thunder_program_id": "int-2"}},
                        stream_mode="updates")
    next(stream)
    stream.close()
    assert app.flush()
    row = stack.wait_terminated("int-1")
    assert (row["end_status"], row["requests"]) == ("ok", 1)
    assert stack.wait_terminated("int-2")["end_status"] == "cancelled"


def test_thread_identity_is_one_program_across_invocations(stack: Stack) -> None:
    stack.fake.script = ["reply"]
    agent = create_agent(stack.model(), [], system_prompt=SYSTEM, checkpointer=InMemorySaver())
    app = wrap(agent, scheduler_url=stack.url, identity="thread", thread_prefix="chat-")
    config = {"configurable": {"thread_id": "42"}}
    app.invoke({"messages": [("user", "first")]}, config)
    app.invoke({"messages": [("user", "second")]}, config)
    assert app.flush()
    row = stack.program("chat-42")
    assert row["status"] == "active" and row["requests"] == 2
    assert row["cached_tokens"] > 0    # the second turn re-sent the first as its prefix
    app.end_thread("42")
    assert app.flush()
    assert stack.wait_terminated("chat-42")["end_status"] == "ok"


def test_middleware_makes_each_agent_invocation_a_program(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 4, "b": 4})], "eight"]
    middleware = ThunderMiddleware(scheduler_url=stack.url, priority=7)
    agent = create_agent(stack.model(), [add], middleware=[middleware])
    result = agent.invoke({"messages": [("user", "4+4")]})
    assert result["messages"][-1].content == "eight"
    program_id = result["thunder_program_id"]
    assert middleware.emitter.flush(10)
    row = stack.wait_terminated(program_id)
    assert (row["requests"], row["tool_calls"], row["end_status"], row["priority"]) == (
        2, 1, "ok", 7)


async def test_middleware_async_path(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 1, "b": 1})], "two"]
    middleware = ThunderMiddleware(scheduler_url=stack.url)
    agent = create_agent(stack.model(), [add], middleware=[middleware])
    results = await asyncio.gather(*(
        agent.ainvoke({"messages": [("user", f"{i}")]}) for i in range(10)))
    assert middleware.emitter.flush(10)
    ids = {r["thunder_program_id"] for r in results}
    assert len(ids) == 10
    for program_id in ids:
        row = stack.wait_terminated(program_id)
        assert (row["requests"], row["tool_calls"]) == (2, 1)


def test_unreachable_scheduler_never_breaks_the_run(
    stack: Stack, caplog: pytest.LogCaptureFixture,
) -> None:
    stack.fake.script = [[FakeToolCall("add", {"a": 1, "b": 2})], "three"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # the model is reachable directly; only the lifecycle API is down
    model = ChatOpenAI(model="scripted", base_url=f"{stack.fake.url}/v1", api_key="unused")
    app = wrap(create_agent(model, [add]), scheduler_url=dead)
    with caplog.at_level(logging.WARNING, logger="thunder_core.emitter"):
        started = time.monotonic()
        result = app.invoke({"messages": [("user", "1+2")]}, _pid(f"dead-{uuid.uuid4()}"))
        elapsed = time.monotonic() - started
        assert app.flush(20)
    assert result["messages"][-1].content == "three"
    assert elapsed < 5   # lifecycle calls never sat on the agent's path
    lost = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert lost and "program start" in lost[0]


def _usages(messages: list[Any]) -> list[Any]:
    return [m.usage_metadata for m in messages if isinstance(m, AIMessage)]


def test_usage_metadata_is_the_same_with_streaming_dispatch_on_and_off(
    streaming_dispatch: bool,
) -> None:
    """A ChatOpenAI that reports usage unstreamed keeps reporting it when dispatch makes its
    calls stream (real SSE through the scheduler's proxy), hand-built graph and create_agent,
    sync and async; the numbers are the ones the scheduler accounted."""
    if not streaming_dispatch:
        pytest.skip("compares both settings itself")
    script: list[Any] = [
        [FakeToolCall("add", {"a": 1, "b": 2}), FakeToolCall("multiply", {"a": 3, "b": 4})],
        "done",
    ]
    seen: dict[bool, list[Any]] = {}
    for dispatch in (True, False):
        fake = ScriptedOpenAI()
        fake.start()
        # no prompt split: its prefills would make the engine's cached tokens depend on timing
        service = start_service_thread(load_settings(
            {"backends": [f"sglang={fake.url}"], "prompt_split": False}))
        try:
            wait_http(f"{service.url}/ready", timeout_s=20)
            stack = Stack(fake, service)
            fake.script = script
            graph = wrap(_tool_graph(stack), scheduler_url=stack.url,
                         streaming_dispatch=dispatch)
            first = graph.invoke({"messages": [("user", "go")]}, _pid("usage-graph"))
            agent = wrap(create_agent(stack.model(), [add, multiply], system_prompt=SYSTEM),
                         scheduler_url=stack.url, streaming_dispatch=dispatch)
            second = asyncio.run(agent.ainvoke({"messages": [("user", "go")]},
                                               _pid("usage-agent")))
            assert graph.flush() and agent.flush()
            usages = _usages(first["messages"]) + _usages(second["messages"])
            assert len(usages) == 4 and all(u is not None for u in usages)
            for run, result in (("usage-graph", first), ("usage-agent", second)):
                row = stack.wait_terminated(run)
                mine = _usages(result["messages"])
                assert sum(u["input_tokens"] for u in mine) == row["prompt_tokens"]
                assert sum(u["output_tokens"] for u in mine) == row["completion_tokens"]
                assert sum(u["input_token_details"]["cache_read"] for u in mine) \
                    == row["cached_tokens"]
            streamed = [bool(r["body"].get("stream")) for r in fake.requests]
            assert streamed == [dispatch] * 4
            seen[dispatch] = usages
        finally:
            service.stop()
            fake.stop()
    assert seen[True] == seen[False]
