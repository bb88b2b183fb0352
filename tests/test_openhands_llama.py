"""A real OpenHands SDK conversation on the real llama-server engine, through the scheduler.

SmolLM2-135M does not emit tool calls, so both turns are plain answers (the tool flow is covered
with the scripted fake in test_openhands_e2e.py). The agent still carries the terminal tool, so
the first prompt is OpenHands' full system prompt (about 3.6k tokens): the engine runs with 8k
context per slot (``ctx_tokens`` 16384, ``parallel`` 2). Asserted on what the scheduler saw:
the conversation is a program with framework ``openhands`` that ends ``ok``, and the second
turn re-uses the first turn's prefix from the engine's cache.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

import tempfile
from collections.abc import Callable

import httpx
import pytest
from fixtures.llama_engines import LlamaEngine
from fixtures.scheduler_service import RunningService
from openhands.sdk import LLM, Agent, Conversation, Tool
from openhands.tools.terminal import TerminalTool  # noqa: F401  (registers "terminal")

import thunder_openhands
from thunder_core.emitter import LifecycleEmitter

pytestmark = [pytest.mark.llama, pytest.mark.slow, pytest.mark.timeout(600)]
# two cold prefills of ~3.6k tokens on one shared core took 225 s in one run


def test_openhands_conversation_on_llama_server_through_the_scheduler(
    llama_engines: Callable[..., list[LlamaEngine]],
    scheduler_service: Callable[..., RunningService],
) -> None:
    (engine,) = llama_engines(n=1, ctx_tokens=16384, parallel=2)
    service = scheduler_service(backends=[f"llama@llamacpp={engine.url}"])
    emitter = LifecycleEmitter(service.url)
    thunder_openhands.enable(service.url, emitter=emitter)
    try:
        # base_url is the engine itself: the toggle is what sends the requests to the scheduler
        llm = LLM(model="openai/smollm2", base_url=f"{engine.url}/v1", api_key="unused",
                  usage_id="agent", num_retries=0, max_output_tokens=12, temperature=0.0,
                  timeout=240)
        agent = Agent(llm=llm, tools=[Tool(name="terminal",
                                           params={"terminal_type": "subprocess"})])
        conversation = Conversation(agent=agent, workspace=tempfile.mkdtemp(prefix="oh-llama-"),
                                    visualizer=None)
        pid = str(conversation.id)
        conversation.send_message("Say hello.")
        conversation.run()
        http = httpx.Client(base_url=service.url, timeout=10)
        first = http.get(f"/v1/programs/{pid}").json()
        conversation.send_message("Say goodbye.")
        conversation.run()
        conversation.close()
        assert emitter.flush(10)
        second = http.get(f"/v1/programs/{pid}").json()
    finally:
        thunder_openhands.disable()
        emitter.close()
    assert first["framework"] == "openhands" and first["end_status"] == "ok"
    assert first["requests"] == 1 and first["prompt_tokens"] > 3000   # OpenHands' prompt
    assert second["framework"] == "openhands" and second["end_status"] == "ok"
    assert second["requests"] == 1
    # the second turn's prompt starts with the whole first turn: the engine had it cached
    assert second["cached_tokens"] >= first["prompt_tokens"] * 0.9, (first, second)
