"""Each rule of the request-body analysis (``request_body.py``), on hand-built bodies."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from thunder_core.contract import TRACE_FIELD, EnginePaths
from thunder_scheduler.request_body import (
    BYTES_PER_TOKEN,
    analyse,
    estimate_prompt_tokens,
    max_output_tokens,
    prompt_blocks,
    request_path,
)

# -- prompt estimate ---------------------------------------------------------------------------


def test_text_counts_four_utf8_bytes_per_token_rounded_up() -> None:
    assert estimate_prompt_tokens({"prompt": "abcd"}) == 1
    assert estimate_prompt_tokens({"prompt": "abcde"}) == 2
    # non-ASCII counts its bytes: "é" is 2 bytes, so 3 of them are 6 bytes -> 2 tokens
    assert estimate_prompt_tokens({"prompt": "ééé"}) == 2
    assert estimate_prompt_tokens({"text": "x" * 400}) == 100  # SGLang /generate spelling


def test_chat_adds_three_per_message_and_three_for_the_reply() -> None:
    body = {"messages": [{"role": "system", "content": "abcd"},
                         {"role": "user", "content": "abcdefgh"}]}
    assert estimate_prompt_tokens(body) == 3 + (3 + 1) + (3 + 2)
    assert estimate_prompt_tokens({"messages": []}) == 3


def test_chat_text_parts_count_and_other_parts_do_not() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "abcdefgh"},
        {"type": "image_url", "image_url": {"url": "data:..." + "A" * 10_000}},
        "abcd",
    ]}]}
    assert estimate_prompt_tokens(body) == 3 + 3 + 2 + 1


def test_tool_calls_and_tool_schemas_are_counted() -> None:
    call = {"function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
    body: dict[str, Any] = {"messages": [{"role": "assistant", "content": None,
                                          "tool_calls": [call]}]}
    args = math.ceil(len('{"cmd": "ls"}') / BYTES_PER_TOKEN)
    assert estimate_prompt_tokens(body) == 3 + 3 + 1 + args
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
    schema = math.ceil(len(orjson.dumps(tools)) / BYTES_PER_TOKEN)
    assert estimate_prompt_tokens({**body, "tools": tools}) == 3 + 3 + 1 + args + schema


def test_token_ids_are_counted_exactly() -> None:
    assert estimate_prompt_tokens({"input_ids": list(range(77))}) == 77
    assert estimate_prompt_tokens({"prompt": [1, 2, 3]}) == 3
    assert estimate_prompt_tokens({"prompt": [[1, 2], [3, 4, 5]]}) == 5  # a batch: all of it


def test_the_trace_extension_states_the_prompt_length() -> None:
    stub = {"messages": [{"role": "user", "content": "(trace replay)"}]}
    assert estimate_prompt_tokens({**stub, TRACE_FIELD: {"prompt_tokens": 5000}}) == 5000
    for bad in (0, -1, True, "5000", None):  # a bad count falls back to the body
        assert estimate_prompt_tokens({**stub, TRACE_FIELD: {"prompt_tokens": bad}}) == \
            estimate_prompt_tokens(stub)


def test_a_body_without_a_prompt_estimates_zero() -> None:
    assert estimate_prompt_tokens({}) == 0
    assert estimate_prompt_tokens({"messages": "not a list", "prompt": 7}) == 0


# -- output limit ------------------------------------------------------------------------------


def test_output_limit_in_each_spelling_and_its_precedence() -> None:
    assert max_output_tokens({"max_tokens": 100}) == 100
    assert max_output_tokens({"max_completion_tokens": 50, "max_tokens": 100}) == 50
    assert max_output_tokens({"sampling_params": {"max_new_tokens": 7}}) == 7
    assert max_output_tokens({"max_tokens": 0}) == 0
    assert max_output_tokens({}) is None
    for bad in (-1, "100", True, 1.5):
        assert max_output_tokens({"max_tokens": bad}) is None


# -- prompt fingerprint ------------------------------------------------------------------------


def test_prompts_share_keys_exactly_as_far_as_they_share_blocks() -> None:
    system = "x" * 600  # at 64-token blocks (256 bytes): 2 full blocks of the system prompt
    a = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "a"}]}
    b = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "b"}]}
    ka, kb = prompt_blocks(a, 64), prompt_blocks(b, 64)
    assert ka[:2] == kb[:2] and ka[2:] != kb[2:]
    assert prompt_blocks(a, 64) == ka  # deterministic


def test_the_block_size_is_the_callers() -> None:
    ids = {"input_ids": list(range(130))}  # 520 bytes
    assert len(prompt_blocks(ids, 64)) == 3  # 256-byte blocks, the last partial
    assert len(prompt_blocks(ids, 16)) == 9  # 64-byte blocks
    with pytest.raises(ValueError, match="block_tokens"):
        prompt_blocks(ids, 0)


def test_trace_block_ids_are_chained_and_namespaced_by_session() -> None:
    t1 = prompt_blocks({TRACE_FIELD: {"hash_ids": [5, 6], "session": "s1"}}, 64)
    t2 = prompt_blocks({TRACE_FIELD: {"hash_ids": [5, 7], "session": "s1"}}, 64)
    t3 = prompt_blocks({TRACE_FIELD: {"hash_ids": [5, 6], "session": "s2"}}, 64)
    assert len(t1) == 2
    assert t1[0] == t2[0] and t1[1] != t2[1] and t1[0] != t3[0]


def test_a_batch_is_fingerprinted_by_its_first_prompt() -> None:
    assert prompt_blocks({"prompt": ["abc", "zzz"]}, 64) == prompt_blocks({"prompt": "abc"}, 64)
    assert prompt_blocks({"prompt": [[1, 2], [3]]}, 64) == prompt_blocks({"prompt": [1, 2]}, 64)
    assert prompt_blocks({"prompt": ""}, 64) == ()


# -- endpoint and the whole analysis -----------------------------------------------------------


def test_request_path_follows_the_body_shape() -> None:
    assert request_path({"messages": []}) == EnginePaths.CHAT_COMPLETIONS
    assert request_path({"prompt": "x"}) == EnginePaths.COMPLETIONS
    assert request_path({"text": "x"}) == EnginePaths.GENERATE


def test_analyse_fingerprints_only_when_given_a_block_size() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    facts = analyse(body, None)
    assert facts.prompt_blocks == ()
    assert facts.prompt_tokens_estimate == estimate_prompt_tokens(body)
    assert facts.max_output_tokens == 9 and facts.path == EnginePaths.CHAT_COMPLETIONS
    assert analyse(body, 64).prompt_blocks == prompt_blocks(body, 64) != ()
