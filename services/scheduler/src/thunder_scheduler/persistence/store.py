"""StateStore: the program table's checkpoints in one SQLite file.

Why SQLite in WAL mode: it ships with Python (no service to run, nothing to install), a
transaction is atomic across a kill -9 (the write-ahead log is replayed or discarded on the
next open), and WAL lets a batch commit with one sequential append and no fsync of the main
file. ``synchronous=NORMAL``: a committed batch survives the process being killed; only an OS
crash or power loss can take back the last batches (the scheduler's state is a cache of what
agents will tell it again, so that is the right trade against an fsync per batch).

Schema (``SCHEMA_VERSION``): ``programs(program_id PRIMARY KEY, body)`` with one JSON
``ProgramCheckpoint`` per live program, and ``meta(key PRIMARY KEY, value)`` with the
``GlobalsCheckpoint`` under ``globals`` and the schema version under ``schema``.

Every method is blocking and must be called from one thread at a time (the persister uses a
single worker thread). Encoding and decoding of checkpoints live here too (orjson).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson

from thunder_scheduling.checkpoint import (
    BackendCheckpoint,
    GlobalsCheckpoint,
    ProgramCheckpoint,
    ToolCallCheckpoint,
)

SCHEMA_VERSION: Final = 1


class StateStoreError(RuntimeError):
    """The state file cannot be opened, or holds something this version cannot read."""


def encode(value: ProgramCheckpoint | GlobalsCheckpoint) -> bytes:
    return orjson.dumps(value)


def decode_program(body: bytes) -> ProgramCheckpoint:
    data: dict[str, Any] = orjson.loads(body)
    data["tools"] = [ToolCallCheckpoint(**t) for t in data.get("tools", [])]
    return ProgramCheckpoint(**data)


def decode_globals(body: bytes) -> GlobalsCheckpoint:
    data: dict[str, Any] = orjson.loads(body)
    data["backends"] = [BackendCheckpoint(**b) for b in data.get("backends", [])]
    data["tool_estimates"] = {
        name: (float(v[0]), int(v[1])) for name, v in data.get("tool_estimates", {}).items()
    }
    return GlobalsCheckpoint(**data)


def check_state_file(path: Path) -> str | None:
    """Why an existing ``path`` cannot be used as a state file (None: it can); read-only."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                return None if not tables else f"{path} is an SQLite file of something else"
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.Error as exc:
        return f"{path} is not a state file ({exc})"
    if row is not None and str(row[0]) != str(SCHEMA_VERSION):
        return (f"{path} has schema {row[0]}, this version reads {SCHEMA_VERSION}: move it "
                "away to start empty")
    return None


class StateStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS programs (program_id TEXT PRIMARY KEY, body BLOB)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state file {self.path}: {exc}") from exc
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StateStoreError(
                f"state file {self.path} has schema {row[0]}, this version reads "
                f"{SCHEMA_VERSION}: move it away to start empty"
            )

    def load(self) -> tuple[GlobalsCheckpoint | None, list[ProgramCheckpoint]]:
        """The stored checkpoint (None, [] for a new file)."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'globals'").fetchone()
            bodies = self._db.execute("SELECT body FROM programs").fetchall()
            globals_ = decode_globals(row[0]) if row is not None else None
            programs = [decode_program(b[0]) for b in bodies]
        except (sqlite3.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise StateStoreError(f"state file {self.path} is unreadable: {exc}") from exc
        return globals_, programs

    def write(self, upserts: Iterable[tuple[str, bytes]], deletes: Iterable[str],
              globals_body: bytes | None) -> None:
        """One transaction: upsert and delete program rows, replace the globals."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO programs VALUES (?, ?) "
                "ON CONFLICT(program_id) DO UPDATE SET body = excluded.body", upserts,
            )
            db.executemany("DELETE FROM programs WHERE program_id = ?",
                           ((pid,) for pid in deletes))
            if globals_body is not None:
                db.execute(
                    "INSERT INTO meta VALUES ('globals', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (globals_body,),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM programs").fetchone()[0])

    def close(self) -> None:
        self._db.close()


__all__ = ["SCHEMA_VERSION", "StateStore", "StateStoreError", "decode_globals",
           "decode_program", "encode"]
