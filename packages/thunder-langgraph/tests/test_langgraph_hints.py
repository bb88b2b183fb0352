"""Cache hints sent by the LangGraph adapter: shared prefix, compaction, expected tool time.

Real graphs, ``create_agent`` and tools; the model is the scripted streaming test model; the
lifecycle API is an in-process transport that records what was sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, RemoveMessage, SystemMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt import ToolNode, tools_condition
from scripted_model import ScriptedStreamingModel, call_chunks, finish, text_chunks

from thunder_core import LifecycleEmitter, ThunderClient
from thunder_core.contract import shared_prefix_id
from thunder_langgraph import ThunderMiddleware, wrap

SYSTEM = "You are a careful assistant."


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        client = ThunderClient("http://scheduler.test", transport=httpx.MockTransport(self))
        self.emitter = LifecycleEmitter(client=client)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.url.path, json.loads(request.content or b"{}")))
        return httpx.Response(200, json={"program_id": "x", "status": "active",
                                         "phase": "reasoning"})

    def hints(self) -> list[dict[str, Any]]:
        assert self.emitter.flush(5)
        return [h for path, body in self.sent if path.endswith("/hints") for h in body["hints"]]

    def tool_starts(self) -> list[dict[str, Any]]:
        assert self.emitter.flush(5)
        return [body for path, body in self.sent if path.endswith("/tools")]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def slow_build(target: str) -> str:
    """Builds a target (takes minutes)."""
    return f"built {target}"


slow_build.metadata = {"thunder_expected_duration_s": 90}


def _turns(name: str = "add", args: dict[str, Any] | None = None) -> list[Any]:
    return [[*call_chunks(0, "call_1", name, args or {"a": 1, "b": 2}), finish()],
            [*text_chunks("done"), finish()]]


def _agent_graph(model: Any, tools: list[Any], compact: bool = False) -> Any:
    bound = model.bind(tools=[convert_to_openai_tool(t) for t in tools])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke([SystemMessage(SYSTEM), *state["messages"]])]}

    def summarise(state: MessagesState) -> dict[str, Any]:
        # a compaction step: the history becomes a summary plus the last tool result
        return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES),
                             AIMessage("summary of the work so far", id="summary-1"),
                             state["messages"][-1]]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    if compact:
        graph.add_node("summarise", summarise)
        graph.add_edge("tools", "summarise")
        graph.add_edge("summarise", "agent")
    else:
        graph.add_edge("tools", "agent")
    return graph.compile()


def test_shared_prefix_is_sent_once_per_program_with_the_contract_id() -> None:
    rec = Recorder()
    app = wrap(_agent_graph(ScriptedStreamingModel(turns=_turns()), [add]), emitter=rec.emitter)
    app.invoke({"messages": [("user", "1+2")]})
    expected = shared_prefix_id(SYSTEM, [convert_to_openai_tool(add)])
    assert rec.hints() == [{"kind": "shared_prefix", "prefix_id": expected}]   # two model calls


def test_a_rewritten_history_is_reported_as_compacted() -> None:
    rec = Recorder()
    app = wrap(_agent_graph(ScriptedStreamingModel(turns=_turns()), [add], compact=True),
               emitter=rec.emitter)
    app.invoke({"messages": [("user", "1+2")]})
    kinds = [h["kind"] for h in rec.hints()]
    assert kinds == ["shared_prefix", "context_compacted"]


def test_no_compaction_hint_when_the_history_only_grows() -> None:
    rec = Recorder()
    app = wrap(_agent_graph(ScriptedStreamingModel(turns=_turns()), [add]), emitter=rec.emitter)
    app.invoke({"messages": [("user", "1+2")]})
    assert "context_compacted" not in [h["kind"] for h in rec.hints()]


def test_a_tool_with_an_expected_duration_reports_it_on_tool_start() -> None:
    rec = Recorder()
    model = ScriptedStreamingModel(turns=_turns("slow_build", {"target": "app"}))
    app = wrap(_agent_graph(model, [slow_build]), emitter=rec.emitter)
    app.invoke({"messages": [("user", "build it")]})
    (start,) = rec.tool_starts()
    assert (start["tool_name"], start["expected_duration_s"]) == ("slow_build", 90)


def test_middleware_sends_the_same_prefix_id_and_the_expected_duration() -> None:
    rec = Recorder()
    model = ScriptedStreamingModel(turns=_turns("slow_build", {"target": "app"}))
    agent = create_agent(model, [slow_build], system_prompt=SYSTEM,
                         middleware=[ThunderMiddleware(emitter=rec.emitter)])
    agent.invoke({"messages": [("user", "build it")]})
    expected = shared_prefix_id(SYSTEM, [convert_to_openai_tool(slow_build)])
    assert rec.hints() == [{"kind": "shared_prefix", "prefix_id": expected}]
    (start,) = rec.tool_starts()
    assert start["expected_duration_s"] == 90
