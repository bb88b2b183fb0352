"""The server's prompt-key cache returns exactly what the uncached tokenizer functions return."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thunder_sim import tokenizer as tok
from thunder_sim.server.prompt_keys import PromptKeyCache

# Text that stresses the segment boundaries: special-token look-alikes, '<', trailing spaces.
TEXT = st.lists(st.sampled_from([*"ab <|>_\n\t", "<|im_end|>", "<|im", " x"]),
                max_size=30).map("".join)
MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "user", "assistant", "tool", "x<|y"]),
    "content": st.one_of(TEXT, st.none(), st.lists(st.fixed_dictionaries(
        {"type": st.just("text"), "text": TEXT}), max_size=2)),
})


def direct(messages: list[dict[str, Any]], tools: Any, page: int,
           seed: bytes) -> tuple[tuple[int, ...], int]:
    ids = tok.tokenize(tok.render_chat(messages, tools))
    return tok.block_keys(ids, page, seed), len(ids)


def test_segments_tokenize_like_the_whole_rendering() -> None:
    msgs = [{"role": "user", "content": "ends with <"}, {"role": "assistant", "content": "x "},
            {"role": "tool", "content": "<|im_end|> inside"}]
    whole = tok.tokenize(tok.render_chat(msgs, tools=[{"name": "t"}]))
    parts = [i for seg in tok.chat_segments(msgs, tools=[{"name": "t"}])
             for i in tok.tokenize(seg)]
    assert parts == whole


@settings(max_examples=60, deadline=None)
@given(conversation=st.lists(MESSAGE, min_size=1, max_size=6),
       page=st.sampled_from([1, 3, 16, 64]), salt=st.sampled_from([b"", b"salt"]))
def test_growing_conversation_matches_uncached_keys(
        conversation: list[dict[str, Any]], page: int, salt: bytes) -> None:
    cache = PromptKeyCache(page)
    for end in range(1, len(conversation) + 1):   # an agent resends its growing context
        msgs = conversation[:end]
        assert cache.chat_keys(msgs, None, salt) == direct(msgs, None, page, salt)
        assert cache.chat_keys(msgs, None, salt) == direct(msgs, None, page, salt)


def test_shared_prefix_is_tokenized_once_and_memory_is_bounded() -> None:
    system = {"role": "system", "content": "rule " * 500}
    cache = PromptKeyCache(64, max_text_chars=10_000)
    a = cache.chat_keys([system, {"role": "user", "content": "one"}])
    misses = cache.segment_misses
    b = cache.chat_keys([system, {"role": "user", "content": "two"}])
    assert cache.segment_misses == misses + 2   # the new user message and the reply prompt
    assert a[0][:7] == b[0][:7] and a[0] != b[0]
    for i in range(20):                                 # past the bound the trie is rebuilt
        msgs = [system, {"role": "user", "content": f"task {i} " * 300}]
        assert cache.chat_keys(msgs) == direct(msgs, None, 64, b"")
    assert cache._text_chars <= 10_000 + 3_000


@pytest.mark.parametrize("page", [16, 64, 128])
@pytest.mark.parametrize("prompt_tokens", [1, 63, 64, 65, 128, 190, 256])
def test_trace_keys_match_uncached(page: int, prompt_tokens: int) -> None:
    cache = PromptKeyCache(page, max_trace_pages=5)
    ids = list(range(40, 40 + -(-prompt_tokens // 64)))
    for _ in range(3):  # cold, memoised, and after the memo was dropped
        assert cache.trace_keys(ids, prompt_tokens, "trace_7") == tok.trace_block_keys(
            ids, prompt_tokens, page, "trace_7")
    assert cache.trace_keys(ids, prompt_tokens, "trace_8") != tok.trace_block_keys(
        ids, prompt_tokens, page, "trace_7")


def test_trace_keys_reject_what_the_uncached_function_rejects() -> None:
    cache = PromptKeyCache(64)
    with pytest.raises(ValueError, match="does not fit"):
        cache.trace_keys([1, 2, 3], 99, "t")
    with pytest.raises(ValueError, match="at least one"):
        cache.trace_keys([], 10, "t")


def test_flatten_ids_fast_path_keeps_validation() -> None:
    assert tok.flatten_ids([0, 5, 2**63 - 1]) == [0, 5, 2**63 - 1]
    for bad in ([1, True], [1, -1], [2**63], [1, "2"], [1.0]):
        with pytest.raises(ValueError, match="non-negative"):
            tok.flatten_ids(bad)


def test_filler_text_is_the_word_cycle() -> None:
    words = tok.FILLER_WORDS
    for start in range(0, 40, 3):
        for n in range(0, 40, 7):
            assert tok.filler_text(start, n) == "".join(
                words[i % len(words)] for i in range(start, start + n))
