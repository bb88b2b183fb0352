"""thunder-openhands end to end: real OpenHands SDK conversations through the real scheduler.

The model is the scripted tool-calling fake (``thunder_testkit.openai_server``, a real loopback
HTTP server named as a fake) registered with the scheduler as an SGLang backend; the agent's
``LLM`` points at the fake itself, so every request the scheduler sees went there because the
toggle re-pointed it. The terminal tool runs for real (subprocess mode). Assertions are on what
the scheduler saw: ``GET /v1/programs/{id}`` and the lifecycle requests it answered, recorded by
the emitter's HTTP transport in the order they were sent.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openhands.sdk import LLM, Agent, Conversation, Tool
from openhands.sdk.event import ObservationEvent
from openhands.tools.terminal import TerminalTool  # noqa: F401  (registers "terminal")

import thunder_openhands
from thunder_core.client import ThunderClient
from thunder_core.emitter import LifecycleEmitter
from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import RunningService, start_service_thread

README = Path(__file__).resolve().parents[1] / "README.md"


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that remembers (method, path, status) of every lifecycle call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.calls.append((request.method, request.url.path, response.status_code))
        return response


class Stack:
    def __init__(self, fake: ScriptedOpenAI, service: RunningService) -> None:
        self.fake = fake
        self.service = service
        self.url = service.url
        self.http = httpx.Client(base_url=service.url, timeout=10)
        self.transport = RecordingTransport()
        self.emitter = LifecycleEmitter(
            client=ThunderClient(service.url, transport=self.transport)
        )

    def llm(self) -> LLM:
        return LLM(model="openai/scripted", base_url=f"{self.fake.url}/v1", api_key="unused",
                   usage_id="agent", num_retries=0)

    def program(self, program_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/programs/{program_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def _ready(url: str) -> None:
    wait_http(f"{url}/ready", timeout_s=20)


@pytest.fixture
def stack() -> Iterator[Stack]:
    fake = ScriptedOpenAI()
    fake.start()
    service = start_service_thread(load_settings({"backends": [f"sglang={fake.url}"]}))
    _ready(service.url)
    built = Stack(fake, service)
    thunder_openhands.enable(service.url, emitter=built.emitter)
    try:
        yield built
    finally:
        thunder_openhands.disable()
        built.emitter.close()
        service.stop()
        fake.stop()


def _terminal_agent(llm: LLM) -> Agent:
    return Agent(llm=llm, tools=[Tool(name="terminal", params={"terminal_type": "subprocess"})])


def test_conversation_is_one_program_with_tool_events_in_order(stack: Stack) -> None:
    stack.fake.script = [[FakeToolCall("terminal", {"command": "echo thunder-$((6*7))"})],
                         "done"]
    observations: list[str] = []
    workdir = tempfile.mkdtemp(prefix="oh-e2e-")
    conversation = Conversation(
        agent=_terminal_agent(stack.llm()), workspace=workdir, visualizer=None,
        callbacks=[lambda e: observations.append(e.observation.text)
                   if isinstance(e, ObservationEvent) else None],
    )
    pid = str(conversation.id)
    conversation.send_message("print the answer")
    conversation.run()
    conversation.close()
    assert stack.emitter.flush(5)
    assert any("thunder-42" in text for text in observations)   # the tool really ran

    row = stack.program(pid)
    assert row["framework"] == "openhands"
    assert row["status"] == "terminated" and row["end_status"] == "ok"
    assert row["requests"] == 2 and row["tool_calls"] == 1 and row["current_tool"] is None
    assert row["cached_tokens"] > 0          # the second turn re-sent the first turn's prefix
    # every request the engine got came through the scheduler, tagged with the conversation
    assert [r["headers"].get("x-litellm-session-id") for r in stack.fake.requests] == [pid] * 2
    # a start answers 201 (created) or 200 (adopted: the first LLM request got there first,
    # since lifecycle events are sent off the agent's path)
    lifecycle = [(m, re.sub(r"call_\w+", "CALL", p), 201 if p == "/v1/programs" and s == 200
                  else s) for m, p, s in stack.transport.calls]
    assert lifecycle == [
        ("POST", "/v1/programs", 201),
        ("POST", f"/v1/programs/{pid}/tools", 200),
        ("POST", f"/v1/programs/{pid}/tools/CALL/end", 200),
        ("POST", f"/v1/programs/{pid}/end", 200),
    ]
    assert stack.emitter.stats.failed == 0
    assert len([p for p in stack.http.get("/v1/programs").json()["programs"]
                if p["framework"] == "openhands"]) == 1


def test_two_conversations_are_two_programs_and_a_rerun_reopens(stack: Stack) -> None:
    stack.fake.script = ["hello"]
    ids = []
    for _ in range(2):
        conversation = Conversation(agent=_terminal_agent(stack.llm()),
                                    workspace=tempfile.mkdtemp(prefix="oh-e2e-"),
                                    visualizer=None)
        conversation.send_message("hi")
        conversation.run()
        conversation.send_message("again")
        conversation.run()
        conversation.close()
        ids.append(str(conversation.id))
    assert stack.emitter.flush(5)
    for pid in ids:
        row = stack.program(pid)
        assert row["status"] == "terminated" and row["end_status"] == "ok"
        assert row["framework"] == "openhands" and row["requests"] == 1   # the second run
    starts = [c for c in stack.transport.calls if c[1] == "/v1/programs"]
    # each run (re)started its program once: 201 created, or 200 adopted when the run's first
    # LLM request reached the scheduler before the start event
    assert len(starts) == 4 and all(c[2] in (200, 201) for c in starts)


def test_a_scheduler_that_is_down_never_breaks_the_agent(
    scripted_openai: ScriptedOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    scripted_openai.script = [[FakeToolCall("terminal", {"command": "echo still-works"})], "ok"]
    emitter = LifecycleEmitter(dead, timeout_s=0.5)
    # route=False: the LLM still reaches its engine; only the lifecycle events have nowhere to go
    thunder_openhands.enable(dead, route=False, emitter=emitter)
    try:
        llm = LLM(model="openai/scripted", base_url=f"{scripted_openai.url}/v1",
                  api_key="unused", usage_id="agent", num_retries=0)
        conversation = Conversation(agent=_terminal_agent(llm), visualizer=None,
                                    workspace=tempfile.mkdtemp(prefix="oh-e2e-"))
        with caplog.at_level(logging.WARNING, logger="thunder_core.emitter"):
            started = time.monotonic()
            conversation.send_message("go")
            conversation.run()
            conversation.close()
            assert emitter.flush(5)
        assert conversation.state.execution_status.value == "finished"
        assert time.monotonic() - started < 30
    finally:
        thunder_openhands.disable()
        emitter.close()
    assert emitter.stats.sent == 0 and emitter.stats.failed == 4   # start, tool x2, end
    assert "was not delivered" in caplog.text
    pid = str(conversation.id)
    sent = [{k.lower(): v for k, v in r["headers"].items()} for r in scripted_openai.requests]
    assert len(sent) == 2
    assert all(h["x-thunder-program-id"] == h["x-litellm-session-id"] == pid for h in sent)


def _readme_snippet() -> str:
    text = README.read_text()
    section = text.split("<!-- openhands:start -->", 1)[1].split("<!-- openhands:end -->", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's OpenHands section must hold one python block"
    return blocks[0]


def test_readme_snippet_runs_through_the_scheduler(
    scripted_openai: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = start_service_thread(load_settings({"backends": [f"sglang={scripted_openai.url}"]}))
    try:
        _ready(service.url)
        scripted_openai.script = [[FakeToolCall("terminal", {"command": "pwd"})], "done"]
        monkeypatch.setenv("THUNDER_SCHEDULER_URL", service.url)
        monkeypatch.setenv("MODEL", "scripted")
        monkeypatch.setenv("LLM_BASE_URL", f"{scripted_openai.url}/v1")
        try:
            exec(compile(_readme_snippet(), "README.md#openhands", "exec"), {})
        finally:
            thunder_openhands.disable()     # closes the snippet's emitter (flushes it first)
        out = capsys.readouterr().out
        match = re.search(r"program (\S+) ended: finished", out)
        assert match, out
        row = httpx.get(f"{service.url}/v1/programs/{match.group(1)}").json()
        assert row["framework"] == "openhands" and row["end_status"] == "ok"
        assert row["requests"] == 2 and row["tool_calls"] == 1
    finally:
        service.stop()
