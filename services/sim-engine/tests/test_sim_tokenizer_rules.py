"""The deterministic tokenizer and block-key chain (socket-free)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thunder_sim import tokenizer as tok

PROSE = (
    "The scheduler keeps each agent program's context resident while its tool runs, and "
    "pauses whole programs when the KV pool would otherwise thrash under load."
)


def test_same_text_same_ids_across_processes() -> None:
    code = f"from thunder_sim.tokenizer import tokenize; print(tokenize({PROSE!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == str(tok.tokenize(PROSE))


def test_about_four_characters_per_token() -> None:
    ratio = len(PROSE) / len(tok.tokenize(PROSE))
    assert 3.0 <= ratio <= 5.0


def test_filler_words_are_one_token_each() -> None:
    for n in (1, 7, 16, 100):
        assert tok.count_tokens(tok.filler_text(0, n)) == n
        assert tok.count_tokens(tok.filler_text(5, n)) == n


def test_chat_template_prefix_is_stable() -> None:
    system = {"role": "system", "content": PROSE * 4}
    a = tok.tokenize(tok.render_chat([system, {"role": "user", "content": "fix the bug"}]))
    b = tok.tokenize(tok.render_chat([system, {"role": "user", "content": "add a test"}]))
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert common > len(tok.tokenize(PROSE * 4))
    assert tok.count_tokens("<|im_start|>") == 1


def test_block_keys_share_exactly_the_common_whole_pages() -> None:
    a = list(range(200))
    b = [*range(130), *range(1000, 1070)]
    ka, kb = tok.block_keys(a, 64), tok.block_keys(b, 64)
    assert len(ka) == 4  # 3 whole pages and one partial
    shared = sum(1 for x, y in zip(ka, kb, strict=False) if x == y)
    assert shared == 2  # pages 0-1 agree; page 2 (tokens 128-191) differs
    # a key identifies its whole prefix: same page content after a different prefix differs
    assert tok.block_keys([9, *range(64)], 64)[0] != tok.block_keys(list(range(64)), 64)[0]
    assert tok.block_keys(a, 64, tok.namespace_seed("salt"))[0] != ka[0]


def test_trace_keys_one_per_id_and_namespaced() -> None:
    k1 = tok.trace_block_keys([11, 12, 13], 150, 64, "trace_0001")
    k2 = tok.trace_block_keys([11, 12, 14], 170, 64, "trace_0001")
    other = tok.trace_block_keys([11, 12, 13], 150, 64, "trace_0002")
    assert len(k1) == 3 and k1[:2] == k2[:2] and k1[2] != k2[2]
    assert not set(k1) & set(other)


def test_trace_keys_map_onto_smaller_and_larger_pages() -> None:
    ids = [1, 2, 3, 4]
    small = tok.trace_block_keys(ids, 256, 16, "t")
    assert len(small) == 16
    big = tok.trace_block_keys(ids, 256, 128, "t")
    assert len(big) == 2
    # diverging in the third trace block (ids are prefix-unique, so all later ids differ too)
    # shares exactly the first 128-token page
    big2 = tok.trace_block_keys([1, 2, 9, 10], 256, 128, "t")
    assert big2[0] == big[0] and big2[1] != big[1]


@pytest.mark.parametrize("n", [0, 64 * 3 + 1, 128])
def test_trace_prompt_tokens_must_fit_the_blocks(n: int) -> None:
    with pytest.raises(ValueError, match="prompt_tokens"):
        tok.trace_block_keys([1, 2, 3], n, 64, "t")
