"""The recompute ledger: every missed prompt token gets exactly one cause, and each cause
arises from the situation it names."""

from __future__ import annotations

from sim_engine_drive import P, make_engine, run

from thunder_sim.engine import EngineRequest
from thunder_sim.engine.ledger import MissCause, owner_of
from thunder_sim.replay.phases import ProgramPhases


def prompt(program: str, rid: str, base: int, blocks: int, *, tail: int = 0,
           max_new: int = 2) -> EngineRequest:
    """``blocks`` whole blocks keyed ``base, base+1, ...`` (a program's growing context shares
    its leading keys), plus ``tail`` tokens of a partial last block."""
    keys = tuple(base + i for i in range(blocks + (1 if tail else 0)))
    return EngineRequest(rid, keys, blocks * P + tail, max_new, owner=program)


def evict_a_for_b(phase: str, *, forcing_b: bool = False) -> dict[str, int]:
    """Program A computes 8 blocks; A is put in ``phase``; program B's 16 fresh blocks need
    A's pages (20-page pool); A comes back with its 8 blocks plus 2 new ones."""
    phases = ProgramPhases()
    e = make_engine()
    phases.attach({"e": e})
    t, _ = run(e)
    e.submit(prompt("A", "A:0", 1000, 8), t)
    t, _ = run(e, t)
    {"acting": phases.tool_started, "paused": phases.paused_now,
     "ended": phases.ended_now, "active": lambda _pid: None}[phase]("A")
    if forcing_b:
        phases.resumed("B", forced=True)
    e.submit(prompt("B", "B:0", 5000, 16), t)
    t, _ = run(e, t)
    if phase == "acting":
        phases.tool_finished("A")
    e.submit(prompt("A", "A:1", 1000, 10), t)
    _, done = run(e, t)
    fin = done["A:1"]
    assert sum(fin.miss_tokens.values()) == fin.prompt_tokens - fin.cached_tokens
    return fin.miss_tokens


def test_a_fresh_prompt_is_first_sight_including_its_partial_block() -> None:
    e = make_engine()
    e.submit(prompt("A", "A:0", 1, 5, tail=10), 0.0)
    _, done = run(e)
    assert done["A:0"].miss_tokens == {MissCause.FIRST_SIGHT: 5 * P + 10}
    assert done["A:0"].cached_tokens == 0


def test_the_next_step_misses_only_its_new_blocks_and_the_old_partial_block() -> None:
    e = make_engine()
    t, _ = run(e)
    e.submit(prompt("A", "A:0", 1, 5, tail=10), t)
    t, _ = run(e, t)
    e.submit(prompt("A", "A:1", 1, 7), t)
    _, done = run(e, t)
    # 5 cached; block 6 (A:0's partial one, never cached) and block 7 are first sight
    assert done["A:1"].cached_tokens == 5 * P
    assert done["A:1"].miss_tokens == {MissCause.FIRST_SIGHT: 2 * P}


def test_evicted_while_its_program_was_in_a_tool() -> None:
    assert evict_a_for_b("acting") == {MissCause.EVICTED_ACTING: 8 * P,
                                       MissCause.FIRST_SIGHT: 2 * P}


def test_evicted_while_its_program_was_paused() -> None:
    assert evict_a_for_b("paused") == {MissCause.EVICTED_PAUSED: 8 * P,
                                       MissCause.FIRST_SIGHT: 2 * P}


def test_evicted_while_its_program_was_active_is_over_admission() -> None:
    assert evict_a_for_b("active") == {MissCause.OVER_ADMISSION: 8 * P,
                                       MissCause.FIRST_SIGHT: 2 * P}


def test_evicted_after_its_owner_ended() -> None:
    assert evict_a_for_b("ended") == {MissCause.OWNER_GONE: 8 * P,
                                      MissCause.FIRST_SIGHT: 2 * P}


def test_evicted_by_a_forced_restore_whatever_the_owner_was_doing() -> None:
    assert evict_a_for_b("paused", forcing_b=True) == {MissCause.FORCED_RESTORE: 8 * P,
                                                       MissCause.FIRST_SIGHT: 2 * P}


def test_a_forced_restore_ends_with_its_first_request_or_a_pause() -> None:
    phases = ProgramPhases()
    phases.resumed("B", forced=True)
    assert phases.eviction_cause("A", "B") is MissCause.FORCED_RESTORE
    phases.request_finished("B")
    assert phases.eviction_cause("A", "B") is MissCause.OVER_ADMISSION
    phases.resumed("B", forced=True)
    phases.paused_now("B")
    assert phases.eviction_cause("A", "B") is MissCause.OVER_ADMISSION


def test_blocks_cached_on_another_engine_are_moved() -> None:
    phases = ProgramPhases()
    one, two = make_engine(), make_engine()
    phases.attach({"one": one, "two": two})
    one.submit(prompt("A", "A:0", 1000, 8), 0.0)
    t, _ = run(one)
    two.submit(prompt("A", "A:1", 1000, 10), t)
    _, done = run(two, t)
    assert done["A:1"].miss_tokens == {MissCause.MOVED: 8 * P, MissCause.FIRST_SIGHT: 2 * P}


def test_a_readmission_after_retraction_is_retraction_and_totals_add_up() -> None:
    e = make_engine(pages=40, new_token_ratio_init=0.0)
    ProgramPhases().attach({"e": e})
    for i in range(6):
        e.submit(prompt(f"p{i}", f"p{i}:0", 100 * i, 4, max_new=6 * P), 0.0)
    _, done = run(e)
    retracted = [f for f in done.values() if f.retractions]
    assert retracted
    for f in retracted:
        assert set(f.miss_tokens) == {MissCause.RETRACTION}
    for f in done.values():
        assert sum(f.miss_tokens.values()) == f.prompt_tokens - f.cached_tokens
    # the engine's totals count every admission, the retracted ones too
    first = sum(f.prompt_tokens for f in done.values())
    again = sum(f.prompt_tokens - f.cached_tokens for f in retracted)
    assert sum(e.counters.miss_tokens.values()) == first + again
    assert e.counters.miss_tokens[MissCause.RETRACTION] == again


def test_blocks_a_retraction_evicts_are_tagged_retraction() -> None:
    phases = ProgramPhases()
    e = make_engine(pages=40, new_token_ratio_init=0.0)
    phases.attach({"e": e})
    for i in range(6):
        e.submit(prompt(f"p{i}", f"p{i}:0", 100 * i, 4, max_new=6 * P), 0.0)
    _, done = run(e)
    retracted = [int(f.rid[1]) for f in done.values() if f.retractions]
    kept = [int(f.rid[1]) for f in done.values() if not f.retractions]
    assert retracted and kept
    # a retracted request's released prompt is what retract_decode evicts at once
    evicted = e.memory.ledger.evicted
    assert {evicted.get(100 * i + k) for i in retracted for k in range(4)} == {
        MissCause.RETRACTION}
    assert {evicted.get(100 * i + k) for i in kept for k in range(4)} == {None}


def test_engine_alone_tells_over_admission_from_evicted_away() -> None:
    e = make_engine()
    e.submit(prompt("A", "A:0", 1000, 8), 0.0)
    t, _ = run(e)
    e.submit(prompt("B", "B:0", 5000, 16), t)
    t, _ = run(e, t)
    e.submit(prompt("A", "A:1", 1000, 10), t)
    _, done = run(e, t)
    assert done["A:1"].miss_tokens == {MissCause.EVICTED_AWAY: 8 * P,
                                       MissCause.FIRST_SIGHT: 2 * P}
    # A's request queued while B's prefill evicts A's blocks: A was waiting, not away
    e2 = make_engine()
    e2.submit(prompt("A", "A:0", 1000, 8), 0.0)
    t, _ = run(e2)
    e2.submit(prompt("B", "B:0", 5000, 16), t)
    e2.submit(prompt("A", "A:1", 1000, 10), t)
    _, done = run(e2, t)
    assert done["A:1"].miss_tokens == {MissCause.OVER_ADMISSION: 8 * P,
                                       MissCause.FIRST_SIGHT: 2 * P}


def test_owner_of_a_forwarded_request_id() -> None:
    assert owner_of("prog-1:7") == "prog-1"
    assert owner_of("sub/agent:a:3") == "sub/agent:a"
    assert owner_of("plain") == "plain"
