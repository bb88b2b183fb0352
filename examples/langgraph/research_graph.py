"""A small LangGraph research graph run as Thunder programs.

    plan (LLM) -> measure (a LangChain tool) -> summarise (LLM)

Every invocation is one program at the scheduler: both LLM requests carry its id, the tool
call is reported as tool start / tool end, and the program ends when the graph returns.

Run it against a scheduler that has a model behind it, for example a local llama-server:

    thunder-scheduler serve --backend llamacpp=http://127.0.0.1:8080 --port 8300 &
    THUNDER_SCHEDULER_URL=http://127.0.0.1:8300 python examples/langgraph/research_graph.py

Environment: THUNDER_SCHEDULER_URL (required), THUNDER_MODEL (default ``smollm2``),
THUNDER_EXAMPLE_RUNS (default 2: the programs run concurrently).
"""

from __future__ import annotations

import asyncio
import os
from typing import TypedDict

import httpx
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

from thunder_langgraph import wrap


class Research(TypedDict, total=False):
    question: str
    plan: str
    stats: str
    summary: str


@tool
def measure(text: str) -> str:
    """Count the words and sentences of a text."""
    words = len(text.split())
    sentences = max(1, text.count(".") + text.count("?") + text.count("!"))
    return f"{words} words, {sentences} sentences"


def build(model: ChatOpenAI):  # type: ignore[no-untyped-def]
    async def plan(state: Research) -> Research:
        reply = await model.ainvoke(f"Write a two-step plan to answer: {state['question']}")
        return {"plan": str(reply.content)}

    async def stats(state: Research) -> Research:
        return {"stats": await measure.ainvoke({"text": state["plan"]})}

    async def summarise(state: Research) -> Research:
        reply = await model.ainvoke(
            f"Plan: {state['plan']}\nPlan size: {state['stats']}\nSay in one sentence what to do."
        )
        return {"summary": str(reply.content)}

    graph = StateGraph(Research)
    graph.add_node("plan", plan)
    graph.add_node("stats", stats)
    graph.add_node("summarise", summarise)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "stats")
    graph.add_edge("stats", "summarise")
    graph.add_edge("summarise", END)
    return graph.compile()


async def main() -> None:
    scheduler = os.environ["THUNDER_SCHEDULER_URL"].rstrip("/")
    model = ChatOpenAI(
        model=os.environ.get("THUNDER_MODEL", "smollm2"), base_url=f"{scheduler}/v1",
        api_key=os.environ.get("THUNDER_API_KEY", "unused"), max_tokens=24, temperature=0,
    )
    app = wrap(build(model), scheduler_url=scheduler, tags={"example": "research"})
    questions = ["Why is the sky blue?", "How do tides work?", "What makes bread rise?"]
    runs = int(os.environ.get("THUNDER_EXAMPLE_RUNS", "2"))
    results = await asyncio.gather(
        *(app.ainvoke({"question": questions[i % len(questions)]}) for i in range(runs))
    )
    app.flush()
    for result in results:
        print(f"Q: {result['question']}\n   plan size: {result['stats']}")
        print(f"   -> {result['summary']}")
    async with httpx.AsyncClient(timeout=5) as http:
        programs = (await http.get(f"{scheduler}/v1/programs")).json()["programs"]
    mine = [p for p in programs if p["tags"].get("example") == "research"]
    for p in mine:
        print(f"program {p['program_id']}: {p['status']}, {p['requests']} LLM requests, "
              f"{p['tool_calls']} tool calls, {p['prompt_tokens']} prompt tokens "
              f"({p['cached_tokens']} cached)")


if __name__ == "__main__":
    asyncio.run(main())
