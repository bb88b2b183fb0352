"""Trace loading, fitting and the program player, on hand-built sessions (no shared data)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from thunder_sim.replay.fit import ContextFit
from thunder_sim.replay.player import Call, GapPolicy, Spawn, ToolBegin, ToolEnd, Wait, plan
from thunder_sim.replay.trace import (
    GapKind,
    SpawnGroup,
    TraceError,
    ideal_hit_tokens,
    instantiate,
    parse_session,
    scan_peak_tokens,
)


def req(t: float, n_in: int, ids: list[int], out: int = 10, kind: str = "tool_result",
        think: float = 0.0) -> dict[str, object]:
    return {"t": t, "type": "n", "in": n_in, "out": out, "hash_ids": ids,
            "input_types": [kind], "think_time": think}


def session(requests: list[dict[str, object]], sid: str = "s1") -> dict[str, object]:
    return {"id": sid, "block_size": 64, "requests": requests}


def test_gaps_kinds_and_partial_block_padding() -> None:
    p = parse_session(session([
        req(0, 130, [1, 2], kind="text"),            # 3 blocks needed, 2 ids: padded
        req(5, 200, [1, 2, 3], think=4.0),            # tool gap 4 s
        req(90, 250, [1, 2, 3, 4], kind="text", think=70.0),
    ]))
    s0, s1, s2 = p.steps
    assert len(s0.blocks) == 3 and s0.blocks[:2] == s1.blocks[:2]
    assert s0.blocks[2] != s1.blocks[2]              # the padded partial block is never shared
    assert (s0.gap_kind, s1.gap_kind, s2.gap_kind) == (GapKind.NONE, GapKind.TOOL, GapKind.HUMAN)
    assert (s1.gap_s, s2.gap_s) == (4.0, 70.0)


def test_block_keys_follow_prefix_not_raw_id() -> None:
    # the same raw id after a different prefix is a different block
    p = parse_session(session([req(0, 128, [1, 2], kind="text"), req(1, 128, [9, 2])]))
    a, b = p.steps
    assert a.blocks[1] != b.blocks[1]
    q = parse_session(session([req(0, 128, [1, 2], kind="text")], "s2"), key_space=2)
    assert not set(q.steps[0].blocks) & set(a.blocks)   # sessions never share keys


def test_subagent_group_concurrent_and_residual_gap() -> None:
    sub = {"type": "subagent", "agent_id": "a1", "subagent_type": "Explore", "t": 50.0,
           "duration_ms": 40_000, "requests": [req(0, 64, [100], kind="text")]}
    sub2 = dict(sub, agent_id="a2", t=55.0, duration_ms=45_000)
    p = parse_session(session([req(0, 64, [1], kind="text"), sub, sub2,
                               req(62, 128, [1, 2], think=52.0)]))
    group = p.items[1]
    assert isinstance(group, SpawnGroup) and len(group.children) == 2
    # a child's id is one URL path segment: the lifecycle API routes /v1/programs/{id}/...
    assert [c.program_id for c in group.children] == ["s1.a1", "s1.a2"]
    again = instantiate(p, 3, "#2").items[1]
    assert isinstance(again, SpawnGroup)
    assert [c.program_id for c in again.children] == ["s1#2.a1", "s1#2.a2"]
    assert p.steps[1].gap_s == pytest.approx(7.0)    # 62 - max(50, 55), not think_time
    actions = plan(p, GapPolicy())
    kinds = [type(a) for a in actions]
    assert kinds == [Call, ToolBegin, Spawn, Wait, ToolEnd, Call]
    assert p.total_steps == 4


def test_player_caps_human_gaps_and_reports_the_cap() -> None:
    p = parse_session(session([req(0, 64, [1], kind="text"),
                               req(1, 64, [1], kind="text", think=300.0),
                               req(2, 64, [1], think=20.0)]))
    acts = plan(p, GapPolicy(human_gap_cap_s=10.0, tool_gap_cap_s=5.0))
    waits = [a for a in acts if isinstance(a, Wait)]
    assert [(w.duration_s, w.trace_s, w.kind) for w in waits] == [
        (10.0, 300.0, GapKind.HUMAN), (5.0, 20.0, GapKind.TOOL)]
    tools = [a for a in acts if isinstance(a, ToolBegin | ToolEnd)]
    assert len(tools) == 2                           # one tool call around the tool gap


def test_ideal_hit_rate_from_block_ids() -> None:
    p = parse_session(session([req(0, 128, [1, 2], kind="text"), req(1, 192, [1, 2, 3])]))
    cached, prompt = ideal_hit_tokens([p])
    assert (cached, prompt) == (128, 320)


def test_instantiate_moves_keys_and_ids() -> None:
    p = parse_session(session([req(0, 64, [1], kind="text")]), key_space=1)
    q = instantiate(p, 9, ".r1")
    assert q.program_id == "s1.r1" and not set(q.steps[0].blocks) & set(p.steps[0].blocks)
    from thunder_core.contract import validate_program_id
    assert validate_program_id(q.program_id) == "s1.r1"  # addressable by the lifecycle API


def test_bad_sessions_raise_clear_errors() -> None:
    with pytest.raises(TraceError, match="missing field 'hash_ids'"):
        parse_session(session([{"t": 0, "type": "n", "in": 5}]))
    with pytest.raises(TraceError, match="requests"):
        parse_session({"id": "x"})
    with pytest.raises(ValueError, match="token scale"):
        parse_session(session([req(0, 64, [1])]), token_scale=2.0)


def test_fit_filters_scales_and_trims(tmp_path: Path) -> None:
    big = session([req(0, 1000, list(range(16)), kind="text"),
                   req(1, 2000, list(range(32)))], "big")
    small = session([req(0, 100, [1, 2], kind="text"), req(1, 200, [1, 2, 3, 4])], "small")
    for s in (big, small):
        (tmp_path / f"{s['id']}.json.gz").write_bytes(gzip.compress(json.dumps(s).encode()))
    raw = gzip.decompress((tmp_path / "big.json.gz").read_bytes())
    assert scan_peak_tokens(raw) == 2010
    kept = ContextFit(context_tokens=1500).load(tmp_path)
    assert [p.program_id for p in kept.programs] == ["small"] and kept.dropped == 1
    assert "dropped 1" in kept.describe() and "1,500" in kept.describe()
    scaled = ContextFit(context_tokens=1500, token_scale=0.5).load(tmp_path)
    assert sorted(p.program_id for p in scaled.programs) == ["big", "small"]
    b = next(p for p in scaled.programs if p.program_id == "big")
    assert [s.prompt_tokens for s in b.steps] == [500, 1000]
    assert b.steps[1].blocks[:8] == b.steps[0].blocks[:8]    # prefix kept at the scale
    trimmed = ContextFit(context_tokens=1500, max_steps=1).load(tmp_path)
    assert sorted(p.program_id for p in trimmed.programs) == ["big", "small"]
    with pytest.raises(ValueError, match="--token-scale"):
        ContextFit(token_scale=0)
