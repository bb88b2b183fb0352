"""The state store and the write-behind persister, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from thunder_scheduler.persistence import RecordingCore, StatePersister, StateStore
from thunder_scheduler.persistence.store import StateStoreError
from thunder_scheduler.settings import SettingsError, load_settings
from thunder_scheduling import make_scheduler
from thunder_scheduling.events import (
    BackendUpdated,
    ProgramEnded,
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    ToolFinished,
    ToolStarted,
)


def _fed(core: RecordingCore) -> None:
    core.handle(BackendUpdated(0.0, "a", True, 10_000))
    for i in range(5):
        core.handle(ProgramStarted(float(i), f"p{i}", tags={"i": str(i)}))
        core.handle(RequestArrived(float(i), f"p{i}", f"r{i}", 3000))
    core.handle(RequestFinished(6.0, "p0", "r0", prompt_tokens=2900, completion_tokens=50))
    core.handle(ToolStarted(6.5, "p0", "c", "pytest"))
    core.handle(ToolFinished(9.5, "p0", "c"))
    core.handle(ProgramEnded(10.0, "p4"))


def _rows(core: RecordingCore) -> list[tuple[object, ...]]:
    return [(r.program_id, r.status, r.backend, r.tags, r.context_tokens, r.pause_count)
            for r in core.snapshot().programs if r.status.value != "terminated"]


async def test_flush_then_restore_gives_the_same_table(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    core = RecordingCore(make_scheduler("thunder"))
    persister = StatePersister(StateStore(path), core, flush_interval_s=0.05)
    _fed(core)
    assert "p4" in core.touched
    await persister.flush()
    assert core.touched == set() and persister.store.count() == 4  # p4 ended: not stored
    await persister.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    fresh = RecordingCore(make_scheduler("thunder"))
    again = StatePersister(StateStore(path), fresh)
    assert sorted(c.program_id for c in again.restore(100.0)) == ["p0", "p1", "p2", "p3"]
    assert _rows(fresh) == _rows(core)
    assert fresh.snapshot().tool_estimates_s == {"pytest": 3.0}
    fresh.handle(ProgramEnded(101.0, "p1"))
    await again.aclose()
    assert StateStore(path).count() == 3


async def test_an_idle_service_writes_a_restorable_file(tmp_path: Path) -> None:
    path = tmp_path / "idle.sqlite3"
    persister = StatePersister(StateStore(path), RecordingCore(make_scheduler("thunder")))
    await persister.flush()  # no event yet: the core's clock is at -inf
    await persister.aclose()
    again = StatePersister(StateStore(path), RecordingCore(make_scheduler("thunder")))
    assert again.restore(5.0) == []
    await again.aclose()


async def test_a_flush_writes_each_touched_program_once(tmp_path: Path) -> None:
    core = RecordingCore(make_scheduler("thunder"))
    persister = StatePersister(StateStore(tmp_path / "s.sqlite3"), core)
    core.handle(BackendUpdated(0.0, "a", True, 10_000))
    core.handle(ProgramStarted(0.0, "p"))
    for i in range(100):
        core.handle(RequestArrived(float(i), "p", f"r{i}", 10))
        core.handle(RequestFinished(float(i), "p", f"r{i}", prompt_tokens=10,
                                    completion_tokens=1))
    await persister.flush()
    assert (persister.flushes, persister.rows_written) == (1, 1)
    await persister.aclose()


def test_state_file_errors_are_one_line_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({"state_file": str(tmp_path / "missing" / "s.sqlite3")})
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings({"state_file": str(tmp_path)})
    assert load_settings({"state_file": ""}).state_file is None
    bad = tmp_path / "other.sqlite3"
    with sqlite3.connect(bad) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(StateStoreError, match="schema 99"):
        StateStore(bad)
    with pytest.raises(SettingsError, match="schema 99"):
        load_settings({"state_file": str(bad)})
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StateStoreError, match="cannot open"):
        StateStore(garbage)
    with pytest.raises(SettingsError, match="not a state file"):
        load_settings({"state_file": str(garbage)})
