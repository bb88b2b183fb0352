"""FTR in the virtual replay, and Sutradhara's two tool levers (``replay/tool_levers.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from thunder_sim.replay.metrics import StepRecord
from thunder_sim.replay.tool_levers import (
    ToolLevers,
    call_durations,
    known_prefix_blocks,
    tool_call_end_token,
    tool_call_ends,
)
from thunder_sim.replay.trace import TraceProgram, parse_session
from thunder_sim.replay.virtual import VirtualConfig, VirtualReplay

POOL = {"kv_pool_tokens": 2_000_000}


def session(*steps: tuple[int, int, str, float], sid: str = "s") -> TraceProgram:
    """Steps as (prompt blocks, output tokens, input kind, gap s); prompts append-only."""
    reqs: list[dict[str, Any]] = []
    for i, (blocks, out, kind, gap) in enumerate(steps):
        reqs.append({"t": i, "type": "n", "in": blocks * 64, "out": out,
                     "hash_ids": list(range(1, blocks + 1)), "input_types": [kind],
                     "think_time": gap})
    return parse_session({"id": sid, "block_size": 64, "requests": reqs}, key_space=1)


def play(program: TraceProgram, levers: ToolLevers | None = None,
         **kw: Any) -> tuple[VirtualReplay, list[StepRecord]]:
    kw.setdefault("policy", "sticky")
    cfg = VirtualConfig(replicas=1, concurrency=1, engine_overrides=POOL,
                        check_invariants=True, levers=levers or ToolLevers(), **kw)
    replay = VirtualReplay([program], cfg)
    report = replay.run()
    assert report.failed_steps == 0
    return replay, sorted(replay.recorder.steps, key=lambda s: s.step_index)


TWO_STEPS = session((10, 100, "text", 0), (14, 50, "tool_result", 5.0))


def test_ftr_of_a_two_step_session_runs_from_the_user_message_to_the_final_first_token() -> None:
    replay, (first, final) = play(TWO_STEPS)
    assert final.sent_s == pytest.approx(first.finished_s + 5.0)
    assert final.first_token_s is not None
    assert replay.recorder.ftr_s == [pytest.approx(final.first_token_s - first.sent_s)]
    assert replay.recorder.session_s == [pytest.approx(final.finished_s - first.sent_s)]
    report = replay._report(final.finished_s)
    assert report.ftr_p50_s == report.ftr_p90_s == pytest.approx(final.first_token_s)
    assert report.sessions_done == 1


def test_ftr_runs_from_the_last_human_message() -> None:
    program = session((10, 20, "text", 0), (12, 20, "tool_result", 2.0),
                      (14, 20, "text", 0), (16, 20, "tool_result", 3.0))
    replay, steps = play(program)
    assert steps[2].first_token_s is not None and steps[3].first_token_s is not None
    assert replay.recorder.ftr_s == [pytest.approx(steps[3].first_token_s - steps[2].sent_s)]


def test_ftr_anatomy_splits_the_ftr_into_engine_decode_and_tool_time() -> None:
    """Alone on its engine nothing is held: the FTR is the first answer's time to first token
    and decode, the 5 s tool, and the final answer's time to first token, to the second."""
    replay, (first, final) = play(TWO_STEPS)
    assert first.first_token_s is not None and final.first_token_s is not None
    (parts,) = replay.recorder.ftr_parts
    assert parts["held"] == 0.0
    assert parts["engine"] == pytest.approx((first.first_token_s - first.sent_s)
                                            + (final.first_token_s - final.sent_s))
    assert parts["decode"] == pytest.approx(first.finished_s - first.first_token_s)
    assert parts["tools"] == pytest.approx(5.0)
    assert sum(parts.values()) == pytest.approx(replay.recorder.ftr_s[0])
    shares = replay._report(final.finished_s).ftr_anatomy
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["tools"] == pytest.approx(5.0 / replay.recorder.ftr_s[0])


def test_ftr_anatomy_counts_the_time_a_paused_program_is_held() -> None:
    """Two programs that do not fit one engine together under a pausing policy: the one held
    back while the other runs counts that wait as ``held``."""
    a = session((40, 200, "text", 0), (44, 50, "tool_result", 30.0), sid="a")
    b = session((40, 200, "text", 0), (44, 50, "tool_result", 30.0), sid="b")
    cfg = VirtualConfig(policy="thunder", replicas=1, concurrency=2,
                        engine_overrides={"kv_pool_tokens": 64 * 60}, check_invariants=True)
    replay = VirtualReplay([a, b], cfg)
    replay.run()
    held = [p["held"] for p in replay.recorder.ftr_parts]
    assert len(held) == 2 and max(held) > 0
    for parts, ftr in zip(replay.recorder.ftr_parts, replay.recorder.ftr_s, strict=True):
        assert sum(parts.values()) == pytest.approx(ftr)


def test_an_unfinished_session_has_no_ftr() -> None:
    replay, _ = play(TWO_STEPS, duration_s=0.5)
    assert replay.recorder.ftr_s == [] and replay.recorder.session_s == []


def test_tool_call_end_rule() -> None:
    assert tool_call_end_token(100, 4) == 96
    assert tool_call_end_token(3, 4) == 1
    assert tool_call_end_token(100, 0) == 100
    assert known_prefix_blocks(tuple(range(14)), 14 * 64, 640, 128, 64) == tuple(range(12))
    assert known_prefix_blocks(tuple(range(11)), 11 * 64, 640, 128, 64) == tuple(range(11))
    with pytest.raises(ValueError):
        ToolLevers(trailing_tokens=-1)


@pytest.mark.parametrize("trailing", [1, 4, 40, 99])
def test_streaming_dispatch_lowers_ftr_when_the_call_ends_before_the_output(
        trailing: int) -> None:
    off, (first_off, _) = play(TWO_STEPS)
    on, (first_on, final_on) = play(
        TWO_STEPS, ToolLevers(streaming_dispatch=True, trailing_tokens=trailing))
    assert on.recorder.ftr_s[0] < off.recorder.ftr_s[0]
    # The tool started inside the first response: the next step waits only for the tool.
    assert first_on.finished_s == pytest.approx(first_off.finished_s)
    assert first_on.finished_s - 5.0 < final_on.sent_s - 5.0 < first_on.finished_s
    # It gains at most the decode after the first token (all of it when the call is token 1).
    assert off.recorder.ftr_s[0] - on.recorder.ftr_s[0] <= first_off.finished_s - (
        first_off.first_token_s or 0.0) + 1e-9


def test_streaming_dispatch_never_raises_ftr() -> None:
    off, _ = play(TWO_STEPS)
    at_end, _ = play(TWO_STEPS, ToolLevers(streaming_dispatch=True, trailing_tokens=0))
    assert at_end.recorder.ftr_s == off.recorder.ftr_s
    short_tool = session((10, 400, "text", 0), (20, 50, "tool_result", 0.001))
    off, (first, _) = play(short_tool)
    on, (_, final_on) = play(short_tool, ToolLevers(streaming_dispatch=True,
                                                    trailing_tokens=300))
    # The tool ends before the response does: the next step still waits for the response.
    assert final_on.sent_s == pytest.approx(first.finished_s)
    assert on.recorder.ftr_s[0] <= off.recorder.ftr_s[0]


def test_prompt_split_turns_the_next_prefix_into_cached_tokens() -> None:
    # 10 prompt blocks + 128 output tokens (2 blocks) are known; 2 blocks of tool result are not.
    program = session((10, 128, "text", 0), (14, 50, "tool_result", 5.0))
    off, (_, final_off) = play(program)
    on, (_, final_on) = play(program, ToolLevers(prompt_split=True))
    assert final_off.cached_tokens == 10 * 64
    assert final_on.cached_tokens == 12 * 64
    assert on._report(final_on.finished_s).extra["prompt_splits"] == 1
    assert on.recorder.ftr_s[0] < off.recorder.ftr_s[0]


def test_prompt_split_is_skipped_when_the_prefix_is_cached() -> None:
    # The next prompt re-sends only the previous prompt (no output kept): nothing to prefill.
    program = session((10, 100, "text", 0), (10, 50, "tool_result", 5.0))
    on, _ = play(program, ToolLevers(prompt_split=True))
    assert on._report(0.0).extra["prompt_splits"] == 0


def test_parallel_call_rule() -> None:
    assert tool_call_ends(100, 4, 1) == (96,)
    assert tool_call_ends(100, 4, 4) == (24, 48, 72, 96)
    assert tool_call_ends(3, 4, 4) == (1, 1, 1, 1)
    assert call_durations(8.0, 4, 0) == pytest.approx((8.0, 4.0, 8 / 3, 2.0))
    assert call_durations(8.0, 4, 1) == pytest.approx((2.0, 8.0, 4.0, 8 / 3))
    assert call_durations(8.0, 1, 7) == (8.0,)
    with pytest.raises(ValueError, match="--parallel-calls"):
        ToolLevers(parallel_calls=0)


def test_parallel_calls_change_nothing_without_streaming_dispatch() -> None:
    one, _ = play(TWO_STEPS)
    four, _ = play(TWO_STEPS, ToolLevers(parallel_calls=4))
    assert four.recorder.ftr_s == one.recorder.ftr_s


def test_streaming_dispatch_starts_each_parallel_call_at_its_own_end_token() -> None:
    # Step 0 calls the tool: with 4 calls the longest (5 s) is call 1, whose arguments close at
    # output token 24 of 100; the step ends 5 s after that, not 5 s after token 96.
    _, (first, _) = play(TWO_STEPS)
    one, (_, final_one) = play(TWO_STEPS, ToolLevers(streaming_dispatch=True))
    four, (_, final_four) = play(TWO_STEPS, ToolLevers(streaming_dispatch=True,
                                                       parallel_calls=4))
    assert final_four.sent_s < final_one.sent_s - 0.5 * (first.finished_s - first.sent_s) * 0.5
    assert final_four.sent_s > first.sent_s + 5.0
    assert four.recorder.ftr_s[0] < one.recorder.ftr_s[0]


def test_the_replays_split_follows_the_cores_rule_for_long_tools() -> None:
    # Thunder lets an acting program's KV decay with a 30 s half-life: once the core has seen
    # the tool take 100 s, the next call of it is not split (tool_long,
    # thunder_scheduling.prompt_split); a tool seen taking 1 s is. A tool never seen is split.
    long_tool = session((10, 128, "text", 0), (14, 128, "tool_result", 100.0),
                        (18, 50, "tool_result", 100.0))
    on, _ = play(long_tool, ToolLevers(prompt_split=True), policy="thunder")
    assert on._report(0.0).extra["split_actions"] == {"sent": 1, "tool_long": 1}
    short_tool = session((10, 128, "text", 0), (14, 128, "tool_result", 1.0),
                         (18, 50, "tool_result", 1.0))
    on, _ = play(short_tool, ToolLevers(prompt_split=True), policy="thunder")
    assert on._report(0.0).extra["split_actions"] == {"sent": 2}


class _Recording(VirtualReplay):
    """Records the type of every event the replay feeds the core (test support)."""

    def _feed(self, event: Any) -> None:
        # the base __init__ may feed before a subclass __init__ could set the list
        self.__dict__.setdefault("fed", []).append(type(event).__name__)
        super()._feed(event)


@pytest.mark.parametrize("tool_events", [True, False])
def test_tool_events_can_be_left_out_as_a_plain_client_would(tool_events: bool) -> None:
    """Without tool events the core hears the requests and the program's start and end only
    (a client written for ThunderAgent's API); the steps and the tool time are the same."""
    cfg = VirtualConfig(policy="thunder", replicas=1, concurrency=1, engine_overrides=POOL,
                        tool_events=tool_events)
    replay = _Recording([TWO_STEPS], cfg)
    report = replay.run()
    assert report.steps == 2 and report.failed_steps == 0
    tools = {"ToolStarted", "ToolFinished"} & set(replay.fed)
    assert tools == ({"ToolStarted", "ToolFinished"} if tool_events else set())
    assert {"ProgramStarted", "RequestArrived", "RequestFinished", "ProgramEnded"} <= set(
        replay.fed)
    first, final = sorted(replay.recorder.steps, key=lambda s: s.step_index)
    assert final.sent_s == pytest.approx(first.finished_s + 5.0)
