"""Caps on live programs: per client and in all (429 with a reason beyond them).

Any request with a fresh program id starts a program (agents need no start event), and a
program lives until it ends or its lease runs out (30 minutes by default). Without a cap, one
client sending many distinct ids fills the program table. :class:`ProgramQuota` is asked
before a request or a start event would create a program:

* the **client** is the bearer token the request carries (so each API key, or each token a
  gateway in front of us hands out, has its own share), else the peer's address;
* a program counts against the client that created it, until the scheduler no longer has it
  (ended, or its lease expired);
* a request for a program that is already live is never refused: the cap only stops new ones.

Counting is lazy: the owners of live programs are kept in a dict, and the ended ones are
pruned only when a cap is reached (one pass over that client's programs, or over all of them
for the global cap), so an admitted request costs two dict lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from thunder_scheduler.auth import bearer_token

__all__ = ["ProgramQuota", "client_identity"]


def client_identity(headers: Iterable[tuple[bytes, bytes]], peer: tuple[str, int] | None) -> str:
    """Who a request comes from: a digest of its bearer token, else its peer address."""
    for name, value in headers:
        if name == b"authorization":
            token = bearer_token(value.decode("latin-1"))
            if token:
                return "key:" + hashlib.blake2b(token.encode(), digest_size=8).hexdigest()
    return f"addr:{peer[0]}" if peer else "addr:?"


class ProgramQuota:
    """Admits new programs up to ``max_total`` live ones and ``max_per_client`` per client."""

    def __init__(self, is_live: Callable[[str], bool], max_total: int,
                 max_per_client: int) -> None:
        self._is_live = is_live
        self.max_total = max_total
        self.max_per_client = max_per_client
        self._owner: dict[str, str] = {}
        self._owned: dict[str, set[str]] = {}

    def is_new(self, program_id: str) -> bool:
        """Whether a request for ``program_id`` would start it (it is neither live nor
        admitted and on its way)."""
        return program_id not in self._owner and not self._is_live(program_id)

    def admit(self, program_id: str, client: str) -> str | None:
        """None if ``program_id`` may run (recorded against ``client``), else the reason."""
        if program_id in self._owner or self._is_live(program_id):
            return None
        owned = self._owned.setdefault(client, set())
        if len(owned) >= self.max_per_client:
            self._prune(list(owned))
            owned = self._owned.setdefault(client, set())
            if len(owned) >= self.max_per_client:
                return (f"too many live programs for this client: {len(owned)} of at most "
                        f"{self.max_per_client} (setting max_live_programs_per_key); end "
                        f"programs or wait for their leases to expire")
        if len(self._owner) >= self.max_total:
            self._prune(list(self._owner))
            if len(self._owner) >= self.max_total:
                return (f"too many live programs: {len(self._owner)} of at most "
                        f"{self.max_total} (setting max_live_programs)")
        self._owner[program_id] = client
        self._owned.setdefault(client, set()).add(program_id)
        return None

    def live_count(self, client: str | None = None) -> int:
        """Programs counted now (after pruning ended ones), for one client or in all."""
        ids = list(self._owner) if client is None else list(self._owned.get(client, ()))
        self._prune(ids)
        return len(self._owner) if client is None else len(self._owned.get(client, ()))

    def _prune(self, program_ids: list[str]) -> None:
        for program_id in program_ids:
            if program_id in self._owner and not self._is_live(program_id):
                client = self._owner.pop(program_id)
                owned = self._owned.get(client)
                if owned is not None:
                    owned.discard(program_id)
                    if not owned:
                        del self._owned[client]
