"""The program table survives a restart: checkpoints in SQLite, written behind the hot path.

``store.StateStore`` is the SQLite file (WAL); ``persister.StatePersister`` records which
programs the core touched and writes their checkpoints in batches from a worker thread;
``persister.RecordingCore`` is the core wrapper that does the recording.
"""

from thunder_scheduler.persistence.persister import RecordingCore, StatePersister
from thunder_scheduler.persistence.store import StateStore, StateStoreError

__all__ = ["RecordingCore", "StatePersister", "StateStore", "StateStoreError"]
