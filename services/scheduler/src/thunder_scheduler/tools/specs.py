"""The registry of runtime specs, keyed by name, each with a content hash.

The hash (SHA-256 of the spec's canonical JSON without ``pool_size``, which only sizes the
pool) names the spec's image: registering the same content again is a no-op, and changing
anything that shapes the sandbox gives a new hash, so a new image and a drained pool. Runtimes
made from the old content keep running until their programs end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from thunder_core.runtimes import RuntimeSpec
from thunder_scheduler.tools.base import SpecNotFound


def spec_hash(spec: RuntimeSpec) -> str:
    canonical = json.dumps(spec.model_dump(exclude={"pool_size"}), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SpecEntry:
    spec: RuntimeSpec
    spec_hash: str

    @property
    def name(self) -> str:
        return self.spec.name


class SpecRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, SpecEntry] = {}

    def register(self, spec: RuntimeSpec) -> tuple[SpecEntry, SpecEntry | None]:
        """Store ``spec``; return the new entry and the one it replaced (None if new or same)."""
        entry = SpecEntry(spec, spec_hash(spec))
        previous = self._entries.get(spec.name)
        self._entries[spec.name] = entry
        if previous is not None and previous.spec_hash == entry.spec_hash:
            return entry, None
        return entry, previous

    def get(self, name: str) -> SpecEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise SpecNotFound(f"no runtime spec named {name!r}; register it first",
                               detail={"spec": name})
        return entry

    def find(self, name: str) -> SpecEntry | None:
        return self._entries.get(name)

    def all(self) -> list[SpecEntry]:
        return list(self._entries.values())


__all__ = ["SpecEntry", "SpecRegistry", "spec_hash"]
