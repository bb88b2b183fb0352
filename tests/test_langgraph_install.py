"""thunder-langgraph as a user meets it: the README snippet, the example, a fresh install, and
the zero-code toggle of an unmodified app.

* the README's "Use with LangGraph" snippet runs against the real scheduler in front of a real
  llama-server, and the scheduler saw one finished program with its request and tokens;
* a plain-LLM graph with one program per thread reuses its prefix on the second turn;
* ``pip install ./packages/thunder-core ./packages/thunder-langgraph[openai]`` into a fresh
  virtual environment runs the example through a running scheduler; in the same environment an
  unmodified LangGraph app, started with only ``THUNDER_SCHEDULER_URL`` set, is scheduled as a
  program with its tool events (the package's ``.pth`` file enables the configure hook).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.llama_engines import LlamaEngine
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from thunder_core.launcher import wait_http
from thunder_langgraph import wrap
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import RunningService, start_service_thread

ROOT = Path(__file__).resolve().parents[1]


def _ready(url: str) -> None:
    wait_http(f"{url}/ready", timeout_s=30)


def _programs(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/v1/programs", timeout=10).json()["programs"])


def _wait_for(url: str, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    def rows_when_true() -> list[dict[str, Any]] | None:
        rows = _programs(url)
        return rows if predicate(rows) else None

    return until(rows_when_true, timeout_s=15, interval_s=0.1, what="the programs' rows")


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("<!-- langgraph:start -->"):text.index("<!-- langgraph:end -->")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the LangGraph section has exactly one Python snippet"
    return blocks[0]


@pytest.fixture
def llama_stack(
    llama_engines: Callable[..., list[LlamaEngine]],
) -> Iterator[RunningService]:
    (engine,) = llama_engines(n=1, ctx_tokens=4096, parallel=2)
    service = start_service_thread(load_settings({"backends": [f"llamacpp={engine.url}"]}))
    _ready(service.url)
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.llama
def test_readme_snippet_runs_against_a_real_engine(llama_stack: RunningService) -> None:
    env = {**os.environ, "THUNDER_SCHEDULER_URL": llama_stack.url, "THUNDER_MODEL": "smollm2"}
    done = subprocess.run([sys.executable, "-c", readme_snippet()], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the snippet printed the model's answer"
    rows = _wait_for(llama_stack.url, lambda rs: any(r["status"] == "terminated" for r in rs))
    (row,) = [r for r in rows if r["framework"] == "langgraph"]
    assert (row["status"], row["end_status"], row["requests"]) == ("terminated", "ok", 1)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["tokens_exact"]


@pytest.mark.llama
def test_thread_program_reuses_its_prefix_on_a_real_engine(llama_stack: RunningService) -> None:
    llm = ChatOpenAI(model="smollm2", base_url=f"{llama_stack.url}/v1", api_key="unused",
                     max_tokens=8, temperature=0)

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    app = wrap(graph.compile(checkpointer=InMemorySaver()), scheduler_url=llama_stack.url,
               identity="thread")
    system = ("You are a patient tutor who explains physics with short, concrete examples. " * 8)
    config = {"configurable": {"thread_id": "tutor-1"}}
    app.invoke({"messages": [("system", system), ("user", "What is inertia?")]}, config)
    first = httpx.get(f"{llama_stack.url}/v1/programs/tutor-1").json()
    app.invoke({"messages": [("user", "And momentum?")]}, config)
    second = httpx.get(f"{llama_stack.url}/v1/programs/tutor-1").json()
    assert second["requests"] == 2 and second["status"] == "active"
    second_cached = second["cached_tokens"] - first["cached_tokens"]
    second_prompt = second["prompt_tokens"] - first["prompt_tokens"]
    # the second turn re-sends the first turn (system + question + answer) as its prefix
    assert second_cached >= 0.8 * first["prompt_tokens"], (first, second)
    assert second_cached < second_prompt
    app.end_thread("tutor-1")
    assert app.flush()


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only the two packages (and their dependencies)."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    venv = tmp_path_factory.mktemp("lg-venv") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "--no-config",
         str(ROOT / "packages" / "thunder-core"),
         f"{ROOT / 'packages' / 'thunder-langgraph'}[openai]"],
        check=True, timeout=600,
    )
    return python


UNMODIFIED_APP = textwrap.dedent('''
    import os
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def lookup(city: str) -> str:
        """Look up the weather."""
        return f"sunny in {city}"

    llm = ChatOpenAI(model="scripted", base_url=os.environ["MODEL_URL"], api_key="unused")
    agent = create_agent(llm, [lookup])
    print(agent.invoke({"messages": [("user", "weather in Paris?")]})["messages"][-1].content)
''')


@pytest.mark.slow
def test_fresh_install_runs_the_example_and_the_zero_code_toggle(fresh_venv: Path) -> None:
    fake = ScriptedOpenAI(script=[[FakeToolCall("lookup", {"city": "Paris"})], "sunny"])
    fake.start()
    service = start_service_thread(load_settings({"backends": [f"sglang={fake.url}"]}))
    try:
        _ready(service.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("THUNDER_")}
        # 1. the example, through the scheduler (its nodes call a tool directly)
        fake.script = ["a two-step plan. first read. then write."]
        example = subprocess.run(
            [str(fresh_venv), str(ROOT / "examples" / "langgraph" / "research_graph.py")],
            env={**env, "THUNDER_SCHEDULER_URL": service.url, "THUNDER_MODEL": "scripted"},
            capture_output=True, text=True, timeout=180,
        )
        assert example.returncode == 0, example.stderr[-3000:]
        rows = _wait_for(service.url, lambda rs: sum(
            r["tags"].get("example") == "research" and r["status"] == "terminated"
            for r in rs) == 2)
        research = [r for r in rows if r["tags"].get("example") == "research"]
        assert len(research) == 2
        seen = [(r["requests"], r["tool_calls"], r["end_status"]) for r in research]
        assert seen == [(2, 1, "ok"), (2, 1, "ok")], seen
        # 2. an unmodified app: only the environment variable is set
        fake.script = [[FakeToolCall("lookup", {"city": "Paris"})], "sunny"]
        app = subprocess.run(
            [str(fresh_venv), "-c", UNMODIFIED_APP],
            env={**env, "THUNDER_SCHEDULER_URL": service.url,
                 "MODEL_URL": f"{service.url}/v1"},
            capture_output=True, text=True, timeout=180,
        )
        assert app.returncode == 0, app.stderr[-3000:]
        assert "sunny" in app.stdout
        rows = _wait_for(service.url, lambda rs: any(
            r["tags"].get("mode") == "auto" and r["status"] == "terminated" for r in rs))
        auto = [r for r in rows if r["tags"].get("mode") == "auto"]
        assert len(auto) == 1, rows
        assert (auto[0]["requests"], auto[0]["tool_calls"], auto[0]["end_status"]) == (2, 1, "ok")
        # 3. without the variable nothing is hooked: the app runs and no program appears
        before = len(_programs(service.url))
        plain = subprocess.run(
            [str(fresh_venv), "-c", UNMODIFIED_APP.replace(
                'os.environ["MODEL_URL"]', f'"{fake.url}/v1"')],
            env=env, capture_output=True, text=True, timeout=180,
        )
        assert plain.returncode == 0, plain.stderr[-3000:]
        assert len(_programs(service.url)) == before
    finally:
        service.stop()
        fake.stop()
