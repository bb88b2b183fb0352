"""The gate's pre-response prompt estimate for trace-replay bodies (the simulator's extension).

Regression: a live replay sends a stub chat message and the real prompt as
``thunder_trace.prompt_tokens``; estimating from the stub (~10 tokens) made the scheduler see
every new program as empty and admit far past the KV pools until the first usage came back,
which the virtual replay (fed the exact count) never did.
"""

from __future__ import annotations

from typing import Any

from thunder_scheduler.request_body import estimate_prompt_tokens


def _replay_body(prompt_tokens: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "(trace replay)"}],
        "thunder_trace": {"hash_ids": [1, 2], "prompt_tokens": prompt_tokens,
                          "session": "s", "block_tokens": 64},
    }


def test_trace_prompt_tokens_is_the_estimate() -> None:
    assert estimate_prompt_tokens(_replay_body(100)) == 100
    assert estimate_prompt_tokens(_replay_body(120_000)) == 120_000


def test_a_bad_trace_count_falls_back_to_the_messages() -> None:
    stub = estimate_prompt_tokens({"messages": _replay_body(1)["messages"]})
    assert stub < 20
    for bad in (0, -5, True, "100", None):
        assert estimate_prompt_tokens(_replay_body(bad)) == stub
