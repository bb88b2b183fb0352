"""What the live replay puts on the wire: the message padding a size-based token estimator
(ThunderAgent's proxy) needs, against the test kit's recording OpenAI server on loopback
(a fake engine, test support; the replay client under test is the real one).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.live import LiveConfig, LiveReplay
from thunder_sim.replay.player import GapPolicy
from thunder_sim.replay.trace import default_trace_dir
from thunder_testkit.openai_server import ScriptedOpenAI


def _replay_bodies(chars_per_token: float) -> list[dict[str, Any]]:
    fit = ContextFit(context_tokens=32_768, sessions=1, max_steps=3, seed=3).load(
        default_trace_dir())
    server = ScriptedOpenAI()
    url = server.start()
    try:
        report = asyncio.run(LiveReplay(fit.programs, LiveConfig(
            target=url, time_scale=1000.0, concurrency=1, lifecycle="off",
            gaps=GapPolicy(tool_gap_cap_s=0.0, human_gap_cap_s=0.0),
            message_chars_per_token=chars_per_token)).run())
    finally:
        server.stop()
    assert report.failed_steps == 0, report.extra.get("last_error")
    return [r["body"] for r in server.requests]


def test_messages_are_padded_to_the_stated_characters_per_prompt_token() -> None:
    bodies = _replay_bodies(4.0)
    assert len(bodies) >= 2
    for body in bodies:
        tokens = body["thunder_trace"]["prompt_tokens"]
        (message,) = body["messages"]
        assert len(message["content"]) == round(4.0 * tokens)
    # a size-based estimator (ThunderAgent: len(json.dumps(body)) / ratio) sees a stable ratio
    ratios = [len(json.dumps(b)) / b["thunder_trace"]["prompt_tokens"] for b in bodies]
    assert max(ratios) / min(ratios) < 1.2


def test_without_padding_the_message_is_a_short_placeholder() -> None:
    for body in _replay_bodies(0.0):
        assert body["messages"] == [{"role": "user", "content": "(trace replay)"}]


def test_a_negative_padding_is_refused_with_the_flag_named() -> None:
    with pytest.raises(ValueError, match="--message-chars-per-token"):
        LiveConfig(target="http://127.0.0.1:1", message_chars_per_token=-1.0)
