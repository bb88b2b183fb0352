"""Streaming tool dispatch on real LangGraph graphs (ToolNode, create_agent), sync and async.

The model is the scripted streaming chat model of ``scripted_model`` (test support); tools,
graphs, ToolNode and create_agent are the real ones. Lifecycle events go to an in-process
transport. Each behaviour is checked against the same graph with dispatch off.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Annotated, Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, tools_condition
from scripted_model import ScriptedStreamingModel, call_chunks, finish, text_chunks, usage

from thunder_core import LifecycleEmitter, ThunderClient
from thunder_langgraph import ThunderMiddleware, wrap
from thunder_langgraph.dispatch import ToolCallAssembler, eligible


class Log:
    """What happened, in order, across threads and tasks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[str] = []

    def add(self, entry: str) -> None:
        with self.lock:
            self.entries.append(entry)

    def has(self, entry: str) -> bool:
        with self.lock:
            return entry in self.entries

    def count(self, entry: str) -> int:
        with self.lock:
            return self.entries.count(entry)


def _emitter() -> LifecycleEmitter:
    body = {"program_id": "x", "status": "active", "phase": "reasoning"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    return LifecycleEmitter(client=ThunderClient("http://scheduler.test", transport=transport))


def _tools(log: Log) -> list[Any]:
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        log.add(f"add:{a}+{b}")
        return a + b

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        log.add(f"multiply:{a}*{b}")
        return a * b

    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        log.add("explode")
        raise RuntimeError(f"tool failed: {reason}")

    return [add, multiply, explode]


def _parallel_turns() -> list[list[AIMessageChunk]]:
    return [
        [*call_chunks(0, "call_add", "add", {"a": 1, "b": 2}),
         *call_chunks(1, "call_mul", "multiply", {"a": 3, "b": 4}), finish(), usage()],
        [*text_chunks("three and twelve"), finish()],
    ]


def _graph(model: ScriptedStreamingModel, tools: list[Any], **tool_node: Any) -> Any:
    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, **tool_node))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def _agraph(model: ScriptedStreamingModel, tools: list[Any], **tool_node: Any) -> Any:
    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, **tool_node))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def _shape(messages: list[BaseMessage]) -> list[tuple[Any, ...]]:
    """Everything a graph user reads from the messages (tool-call ids included)."""
    return [
        (m.type, m.content, [(c["name"], c["args"], c["id"]) for c in getattr(m, "tool_calls", [])],
         getattr(m, "tool_call_id", None), getattr(m, "name", None), getattr(m, "status", None))
        for m in messages
    ]


# -- the assembler -----------------------------------------------------------------------------


def _feed(assembler: ToolCallAssembler, chunk: AIMessageChunk) -> list[str]:
    return [call.id for call in assembler.feed(chunk.tool_call_chunks)]


def test_a_call_closes_on_the_chunk_after_its_json_object_ends() -> None:
    assembler = ToolCallAssembler()
    first = call_chunks(0, "c0", "add", {"a": 1, "b": 2})
    second = call_chunks(1, "c1", "add", {"a": 5, "b": 6})
    closed = [_feed(assembler, chunk) for chunk in [*first, *second, finish()]]
    # c0's JSON ends on its last chunk; the next chunk (c1's header) closes it
    assert closed[len(first)] == ["c0"]
    assert closed[-1] == ["c1"]
    assert [c for chunk in closed for c in chunk] == ["c0", "c1"]


def test_malformed_or_extended_arguments_never_close() -> None:
    for pieces in (['{"a": 1, "b": 2'], ['{"a": 1}', '}'], ['{"a": 1}', ' ', ', "b": 2}'],
                   ["{'a': 1}"], ['[1, 2]']):
        assembler = ToolCallAssembler()
        closed = _feed(assembler, call_chunks(0, "c0", "add", "")[0])
        for piece in pieces:
            closed += _feed(assembler, AIMessageChunk(content="", tool_call_chunks=[
                {"index": 0, "id": None, "name": None, "args": piece, "type": "tool_call_chunk"}]))
        closed += _feed(assembler, finish())
        assert closed == [], pieces


def test_whitespace_after_the_object_still_closes_it() -> None:
    assembler = ToolCallAssembler()
    chunks = [*call_chunks(0, "c0", "add", {"a": 1, "b": 2}),
              AIMessageChunk(content="", tool_call_chunks=[
                  {"index": 0, "id": None, "name": None, "args": "  ", "type": "tool_call_chunk"}]),
              finish()]
    assert [c for chunk in chunks for c in _feed(assembler, chunk)] == ["c0"]


def test_tools_with_injected_arguments_do_not_start_early() -> None:
    log = Log()

    @tool
    def reads_state(x: int, state: Annotated[dict[str, Any], InjectedState]) -> int:
        """Reads the graph state."""
        return x

    assert eligible(_tools(log)[0]) and not eligible(reads_state)


# -- hand-built StateGraph + ToolNode ------------------------------------------------------------


def test_parallel_calls_start_one_by_one_while_the_model_streams() -> None:
    log = Log()
    turns = _parallel_turns()
    n_add = len(call_chunks(0, "x", "add", {"a": 1, "b": 2}))
    model = ScriptedStreamingModel(turns=turns, pauses={
        # before call 2's last argument chunk: call 1 is running, call 2 is not
        (0, n_add + 3): lambda: log.has("add:1+2") and not log.has("multiply:3*4"),
        # before the usage chunk (after the finish chunk): call 2 is running too
        (0, 2 * n_add + 1): lambda: log.has("multiply:3*4"),
    })
    app = wrap(_graph(model, _tools(log)), emitter=_emitter())
    result = app.invoke({"messages": [("user", "go")]})
    assert model.met == {(0, n_add + 3): True, (0, 2 * n_add + 1): True}
    assert log.count("add:1+2") == 1 and log.count("multiply:3*4") == 1
    assert result["messages"][-1].content.strip() == "three and twelve"
    assert model.streamed == [0, 1]

    # the same graph with dispatch off produces the same messages
    log_off = Log()
    off = wrap(_graph(ScriptedStreamingModel(turns=turns), _tools(log_off)), emitter=_emitter(),
               streaming_dispatch=False)
    expected = off.invoke({"messages": [("user", "go")]})
    assert _shape(result["messages"]) == _shape(expected["messages"])


def test_dispatch_off_runs_tools_after_the_response() -> None:
    log = Log()
    model = ScriptedStreamingModel(turns=_parallel_turns())
    app = wrap(_graph(model, _tools(log)), emitter=_emitter(), streaming_dispatch=False)
    app.invoke({"messages": [("user", "go")]})
    assert model.streamed == []        # the model was not even asked to stream
    assert sorted(log.entries) == ["add:1+2", "multiply:3*4"]


async def test_async_graph_starts_tools_during_the_stream_and_matches_off() -> None:
    log = Log()
    turns = _parallel_turns()
    model = ScriptedStreamingModel(turns=turns, pauses={(0, 7): lambda: log.has("add:1+2")})
    app = wrap(_agraph(model, _tools(log)), emitter=_emitter())
    result = await app.ainvoke({"messages": [("user", "go")]})
    assert model.met == {(0, 7): True}
    assert log.count("add:1+2") == 1 and log.count("multiply:3*4") == 1
    off = wrap(_agraph(ScriptedStreamingModel(turns=turns), _tools(Log())), emitter=_emitter(),
               streaming_dispatch=False)
    expected = await off.ainvoke({"messages": [("user", "go")]})
    assert _shape(result["messages"]) == _shape(expected["messages"])


@pytest.mark.parametrize("dispatch", [True, False])
def test_a_tool_that_raises_gives_the_same_error_message(dispatch: bool) -> None:
    log = Log()
    turns = [[*call_chunks(0, "call_x", "explode", {"reason": "disk"}), finish()],
             [*text_chunks("sorry"), finish()]]
    app = wrap(_graph(ScriptedStreamingModel(turns=turns), _tools(log), handle_tool_errors=True),
               emitter=_emitter(), streaming_dispatch=dispatch)
    result = app.invoke({"messages": [("user", "go")]})
    tool_message = result["messages"][2]
    assert tool_message.status == "error" and tool_message.tool_call_id == "call_x"
    assert "tool failed: disk" in tool_message.content
    assert log.count("explode") == 1

    strict = wrap(_graph(ScriptedStreamingModel(turns=turns), _tools(log),
                         handle_tool_errors=False), emitter=_emitter(),
                  streaming_dispatch=dispatch)
    with pytest.raises(RuntimeError, match="tool failed: disk"):
        strict.invoke({"messages": [("user", "go")]})
    assert log.count("explode") == 2


def test_malformed_arguments_run_once_after_the_stream() -> None:
    log = Log()
    header = call_chunks(0, "call_t", "add", "")[0]
    truncated = AIMessageChunk(content="", tool_call_chunks=[{
        "index": 0, "id": None, "name": None, "args": '{"a": 2, "b": 3',
        "type": "tool_call_chunk"}])
    turns = [[header, truncated, finish()], [*text_chunks("five"), finish()]]
    seen: list[bool] = []

    def look() -> bool:
        seen.append(log.has("add:2+3"))
        return False

    model = ScriptedStreamingModel(turns=turns, pause_timeout_s=0.2, pauses={(0, 2): look})
    app = wrap(_graph(model, _tools(log)), emitter=_emitter())
    result = app.invoke({"messages": [("user", "go")]})
    assert seen and not any(seen)            # nothing started while the model streamed
    assert log.count("add:2+3") == 1          # LangChain repaired the JSON; ToolNode ran it once
    assert result["messages"][2].content == "5"


async def test_cancelling_the_run_cancels_the_early_tool() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def slow(seconds: int) -> str:
        """Sleeps."""
        started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "woke"

    turns = [[*call_chunks(0, "call_s", "slow", {"seconds": 60}),
              *text_chunks("still talking while the tool runs"), finish()],
             [*text_chunks("done"), finish()]]
    model = ScriptedStreamingModel(turns=turns, pause_timeout_s=60,
                                   pauses={(0, 6): lambda: False})  # the stream stalls here
    app = wrap(_agraph(model, [slow]), emitter=_emitter())
    task = asyncio.create_task(app.ainvoke({"messages": [("user", "go")]}))
    await asyncio.wait_for(started.wait(), 10)   # started mid-stream
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 10)


def test_interrupt_before_the_tool_node_keeps_tools_waiting() -> None:
    log = Log()
    model = ScriptedStreamingModel(turns=_parallel_turns())

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(_tools(log)))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = wrap(graph.compile(checkpointer=InMemorySaver(), interrupt_before=["tools"]),
               emitter=_emitter())
    config = {"configurable": {"thread_id": "review"}}
    app.invoke({"messages": [("user", "go")]}, config)
    assert log.entries == []                  # no tool ran before the human said yes
    app.invoke(None, config)
    assert sorted(log.entries) == ["add:1+2", "multiply:3*4"]


def test_broken_stream_cancels_what_it_started() -> None:
    log = Log()
    gate = threading.Event()

    @tool
    def waits(x: int) -> int:
        """Waits for the gate."""
        log.add("waits:start")
        gate.wait(10)
        return x

    turns = [[*call_chunks(0, "call_w", "waits", {"x": 1}), *text_chunks("a b c"), finish()]]
    model = ScriptedStreamingModel(turns=turns, raise_at=(0, 6),
                                   pauses={(0, 5): lambda: log.has("waits:start")})
    app = wrap(_graph(model, [waits]), emitter=_emitter())
    with pytest.raises(ConnectionError):
        app.invoke({"messages": [("user", "go")]})
    gate.set()
    assert model.met == {(0, 5): True}        # the tool had started mid-stream
    assert log.entries == ["waits:start"]     # and was not run again after the error


# -- create_agent through the middleware --------------------------------------------------------


@pytest.mark.parametrize("dispatch", [True, False])
def test_create_agent_middleware_dispatches_and_matches(dispatch: bool) -> None:
    log = Log()
    turns = _parallel_turns()
    pauses = {(0, 7): lambda: log.has("add:1+2")} if dispatch else {}
    model = ScriptedStreamingModel(turns=turns, pauses=pauses)
    middleware = ThunderMiddleware(emitter=_emitter(), streaming_dispatch=dispatch)
    agent = create_agent(model, _tools(log), middleware=[middleware])
    result = agent.invoke({"messages": [("user", "go")]})
    assert model.met == ({(0, 7): True} if dispatch else {})
    assert log.count("add:1+2") == 1 and log.count("multiply:3*4") == 1
    assert (model.streamed == [0, 1]) is dispatch
    plain = create_agent(ScriptedStreamingModel(turns=turns), _tools(Log()))
    expected = plain.invoke({"messages": [("user", "go")]})
    assert _shape(result["messages"]) == _shape(expected["messages"])


async def test_create_agent_middleware_async() -> None:
    log = Log()
    model = ScriptedStreamingModel(turns=_parallel_turns(),
                                   pauses={(0, 7): lambda: log.has("add:1+2")})
    agent = create_agent(model, _tools(log), middleware=[ThunderMiddleware(emitter=_emitter())])
    result = await agent.ainvoke({"messages": [("user", "go")]})
    assert model.met == {(0, 7): True}
    assert model.streamed == [0, 1]
    assert log.count("add:1+2") == 1 and log.count("multiply:3*4") == 1
    assert [m.content for m in result["messages"] if m.type == "tool"] == ["3", "12"]


def test_wrapped_create_agent_with_the_middleware_starts_each_tool_once() -> None:
    log = Log()
    model = ScriptedStreamingModel(turns=_parallel_turns())
    agent = create_agent(model, _tools(log), middleware=[ThunderMiddleware(emitter=_emitter())])
    wrap(agent, emitter=_emitter()).invoke({"messages": [("user", "go")]})
    assert log.count("add:1+2") == 1 and log.count("multiply:3*4") == 1
    assert json.dumps(model.streamed) == "[0, 1]"


def test_wrapped_agent_with_human_approval_runs_no_tool_before_the_answer() -> None:
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.types import Command

    log = Log()
    model = ScriptedStreamingModel(turns=_parallel_turns())
    agent = create_agent(model, _tools(log), checkpointer=InMemorySaver(), middleware=[
        HumanInTheLoopMiddleware(interrupt_on={"add": True, "multiply": True})])
    app = wrap(agent, emitter=_emitter())
    assert "model" not in app.dispatch_plan   # the approval node sits between model and tools
    config = {"configurable": {"thread_id": "approve"}}
    result = app.invoke({"messages": [("user", "go")]}, config)
    assert "__interrupt__" in result
    assert log.entries == []                 # nothing ran while the human decides
    app.invoke(Command(resume={"decisions": [{"type": "approve"}, {"type": "approve"}]}), config)
    assert sorted(log.entries) == ["add:1+2", "multiply:3*4"]


def test_plan_of_a_hand_built_graph_names_the_model_node_and_its_tools() -> None:
    log = Log()
    app = wrap(_graph(ScriptedStreamingModel(turns=_parallel_turns()), _tools(log)),
               emitter=_emitter())
    assert {node: sorted(tools) for node, tools in app.dispatch_plan.items()} == {
        "agent": ["add", "explode", "multiply"]}


def test_chat_openai_stream_starts_each_call_before_the_response_ends() -> None:
    """The real OpenAI client on a real SSE stream (served in process): its chunks carry the
    call indexes the assembler follows, and both calls start before the model run ends."""
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_openai import ChatOpenAI

    from thunder_langgraph.dispatch import StreamingToolDispatcher

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    events = [event({"role": "assistant", "content": ""})]
    for i, (name, args) in enumerate([("add", '{"a": 1, "b": 2}'),
                                      ("multiply", '{"a": 3, "b": 4}')]):
        events.append(event({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        for piece in (args[:5], args[5:]):
            events.append(event({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(event({}, "tool_calls"))
    sse = ("".join(events) + "data: [DONE]\n\n").encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, content=sse, headers={"content-type": "text/event-stream"}))
    model = ChatOpenAI(model="m", api_key="k", base_url="http://engine.test/v1", max_retries=0,
                       http_client=httpx.Client(transport=transport))
    order: list[str] = []

    class Ends(BaseCallbackHandler):
        run_inline = True

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            order.append("model end")

    log = Log()
    tools = {t.name: t for t in _tools(log)}
    dispatcher = StreamingToolDispatcher(
        {None: tools}, on_start=lambda call_id, name: order.append(f"start {call_id}"))
    message = model.invoke("go", config={"callbacks": [dispatcher, Ends()]})
    assert order == ["start call_0", "start call_1", "model end"]
    results = [dispatcher.claim(call, tools[call["name"]]) for call in message.tool_calls]
    assert [early.result().content for early in results if early] == ["3", "12"]
    dispatcher.close()
