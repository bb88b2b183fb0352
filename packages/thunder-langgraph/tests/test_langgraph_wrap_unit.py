"""Socket-free unit tests of wrap(): identity choice, config merging, delegation, batches."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.graph import END, START, StateGraph

from thunder_core import InvalidProgramId, LifecycleEmitter, ThunderClient
from thunder_langgraph import ThunderGraph, wrap
from thunder_langgraph.resolver import program_from_config
from thunder_langgraph.wrap import _thread_program_id


class State(TypedDict):
    n: int


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any] | None]] = []
        client = ThunderClient("http://scheduler.test", transport=httpx.MockTransport(self))
        self.emitter = LifecycleEmitter(client=client)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.events.append((request.url.path, body))
        return httpx.Response(200, json={"program_id": "x", "status": "active",
                                         "phase": "reasoning"})

    def paths(self) -> list[str]:
        self.emitter.flush(5)
        return [path for path, _ in self.events]


def _graph(fail_on: int | None = None) -> Any:
    def step(state: State) -> dict[str, int]:
        if state["n"] == fail_on:
            raise ValueError("boom")
        return {"n": state["n"] + 1}

    g = StateGraph(State)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_edge("step", END)
    return g.compile()


def test_invocation_identity_and_ends() -> None:
    rec = Recorder()
    app = wrap(_graph(), emitter=rec.emitter, priority=2)
    assert app.invoke({"n": 1}) == {"n": 2}
    paths = rec.paths()
    assert paths[0] == "/v1/programs" and paths[-1].endswith("/end")
    start_body = rec.events[0][1]
    assert start_body is not None
    assert start_body["framework"] == "langgraph" and start_body["priority"] == 2
    assert start_body["program_id"].startswith("lg-")


def test_error_status_and_batch_settles_each_program() -> None:
    rec = Recorder()
    app = wrap(_graph(fail_on=2), emitter=rec.emitter)
    out = app.batch([{"n": 1}, {"n": 2}, {"n": 3}], return_exceptions=True)
    assert out[0] == {"n": 2} and isinstance(out[1], ValueError) and out[2] == {"n": 4}
    rec.paths()
    ends = [body for path, body in rec.events if path.endswith("/end")]
    assert sorted(b["status"] for b in ends if b) == ["error", "ok", "ok"]
    with pytest.raises(ValueError, match="boom"):
        app.batch([{"n": 2}])


def test_existing_callbacks_are_kept() -> None:
    seen: list[str] = []

    class Mine(BaseCallbackHandler):
        def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
            seen.append("list")

    class Managed(BaseCallbackHandler):
        def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
            seen.append("manager")

    rec = Recorder()
    app = wrap(_graph(), emitter=rec.emitter)
    app.invoke({"n": 0}, {"callbacks": [Mine()]})
    app.invoke({"n": 0}, {"callbacks": CallbackManager(handlers=[Managed()])})
    assert "list" in seen and "manager" in seen


def test_thread_identity_needs_a_thread_id_and_hashes_odd_ids() -> None:
    rec = Recorder()
    app = wrap(_graph(), emitter=rec.emitter, identity="thread")
    with pytest.raises(ValueError, match="thread_id"):
        app.invoke({"n": 0})
    assert _thread_program_id("abc-1") == "abc-1"
    hashed = _thread_program_id("has space é")
    assert hashed.startswith("thread-") and " " not in hashed
    assert hashed == _thread_program_id("has space é")


def test_explicit_ids_are_validated() -> None:
    rec = Recorder()
    with pytest.raises(InvalidProgramId):
        wrap(_graph(), emitter=rec.emitter, program_id="not valid")
    app = wrap(_graph(), emitter=rec.emitter)
    with pytest.raises(InvalidProgramId):
        app.invoke({"n": 0}, {"configurable": {"thunder_program_id": "no spaces allowed"}})


def test_delegation_and_with_config() -> None:
    rec = Recorder()
    graph = _graph()
    app = wrap(graph, emitter=rec.emitter)
    assert app.wrapped is graph
    assert app.get_graph().nodes.keys() == graph.get_graph().nodes.keys()
    derived = app.with_config({"tags": ["x"]})
    assert isinstance(derived, ThunderGraph) and derived.invoke({"n": 5}) == {"n": 6}


def test_resolver_reads_program_from_langchain_config() -> None:
    token = var_child_runnable_config.set({"metadata": {"thunder_program_id": "p-7"}})
    try:
        assert program_from_config(var_child_runnable_config.get()) == "p-7"
    finally:
        var_child_runnable_config.reset(token)
    assert program_from_config(None) is None
