"""llama.cpp's levers: programs pinned to slots, slot save / restore as the host tier.

With ``slot_offload`` on (``--llamacpp-slot-offload``) and the backend's slot count known, a
program is pinned at its first admission on a backend to the least used slot (ties: lowest
id), and its requests carry ``id_slot``. The core's choice of where a paused program's KV goes
(:class:`KvTier`) drives the slot:

* ``HOST``: ``paused`` saves the slot to ``thunder-<sha256(program)[:32]>.bin`` (the engine's
  ``--slot-save-path``);
* ``load_back`` (the core's ``Prewarm`` ahead of the predicted tool end) restores a saved slot,
  so the program's next request finds its prefix cached; ``resumed`` on the same backend
  restores it if no warm-up did; on another backend it drops the pin (the saved KV is on the
  old engine);
* ``DEVICE`` and ``GONE``: nothing is saved (``GONE``: a save from an earlier pause is not
  restored either; the program's KV is recomputed).

``ended`` erases the slot through ``Backend.release_program``, but only when no other live
program is pinned to the same slot. llama.cpp has no call that deletes a saved slot, so the
host tier drops an ended program's file by saving an empty slot over it, which truncates it
to 40 bytes (checked on llama-server 11434): right after the erase, or, when the slot was
still in use by another program (or the program moved to another engine), at the next erase
on that engine (``_stale``: files waiting for an empty slot). A restore into a busy slot is
deferred by the server until the slot is idle.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from thunder_scheduler.backends.base import Backend, BackendKind, SlotOffload
from thunder_scheduler.levers.base import BaseLevers, EngineHints, LeverContext
from thunder_scheduling.kv_tiers import KvTier

__all__ = ["LlamaCppLevers"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _SlotFile:
    backend: str
    slot_id: int
    filename: str
    saved: bool = False
    """The file holds the program's KV and the slot may not (restore it before it runs)."""
    written: bool = False
    """A save was sent: the file exists on the engine (truncated at the end)."""


def _offload(backend: Backend) -> SlotOffload | None:
    if not backend.capabilities.slot_offload or not isinstance(backend, SlotOffload):
        return None
    return backend


class LlamaCppLevers(BaseLevers):
    kind = BackendKind.LLAMACPP

    def __init__(self, ctx: LeverContext) -> None:
        super().__init__(ctx)
        self._slots: dict[str, _SlotFile] = {}
        self._stale: dict[str, set[str]] = {}  # backend -> files of ended / moved programs

    def hints(self, program_id: str, backend: Backend) -> EngineHints:
        slot = self._slots.get(program_id)
        return EngineHints(slot_id=slot.slot_id if slot is not None
                           and slot.backend == backend.name else None)

    def admitted(self, program_id: str, backend: Backend) -> None:
        if not self.ctx.slot_offload or not backend.capabilities.slot_offload:
            return
        current = self._slots.get(program_id)
        if current is not None and current.backend == backend.name:
            return
        n_slots = self.ctx.total_slots(backend.name)
        if not n_slots:
            return
        used = [0] * n_slots
        for slot in self._slots.values():
            if slot.backend == backend.name and slot.slot_id < n_slots:
                used[slot.slot_id] += 1
        slot_id = min(range(n_slots), key=lambda i: (used[i], i))
        digest = hashlib.sha256(program_id.encode()).hexdigest()[:32]
        self._slots[program_id] = _SlotFile(backend.name, slot_id, f"thunder-{digest}.bin")

    def _own_slot(self, program_id: str, backend: Backend) -> tuple[_SlotFile, SlotOffload] | None:
        slot = self._slots.get(program_id)
        offload = _offload(backend)
        if slot is None or offload is None or slot.backend != backend.name:
            return None
        return slot, offload

    def paused(self, program_id: str, backend: Backend, place: KvTier) -> None:
        own = self._own_slot(program_id, backend)
        if own is None:
            return
        slot, offload = own
        if place is not KvTier.HOST:
            slot.saved = False  # DEVICE: still in the slot; GONE: recomputed, never restored
            return
        slot.written = True

        async def save() -> None:
            result = await offload.save_slot(slot.slot_id, slot.filename)
            slot.saved = True
            self.ctx.metrics.host_transfers.labels("offload").inc()
            log.info("paused %s: saved slot %d of %s (%d tokens)", program_id, slot.slot_id,
                     backend.name, result.n_tokens)

        self.ctx.spawn("slot_save", save())

    def load_back(self, program_id: str, backend: Backend) -> bool:
        own = self._own_slot(program_id, backend)
        if own is None or not own[0].saved:
            return False
        self._restore(program_id, backend, *own)
        return True

    def _restore(self, program_id: str, backend: Backend, slot: _SlotFile,
                 offload: SlotOffload) -> None:
        slot.saved = False  # restored once: later requests run on the slot's own KV

        async def restore() -> None:
            result = await offload.restore_slot(slot.slot_id, slot.filename)
            self.ctx.metrics.host_transfers.labels("load_back").inc()
            log.info("restored %s: slot %d of %s (%d tokens)", program_id, slot.slot_id,
                     backend.name, result.n_tokens)

        self.ctx.spawn("slot_restore", restore())

    def resumed(self, program_id: str, backend: Backend) -> None:
        slot = self._slots.get(program_id)
        if slot is None:
            return
        if slot.backend != backend.name:
            del self._slots[program_id]  # migrated: its saved KV is on the old engine
            if slot.written:
                self._stale.setdefault(slot.backend, set()).add(slot.filename)
            return
        own = self._own_slot(program_id, backend)
        if own is not None and slot.saved:
            self._restore(program_id, backend, *own)

    def ended(self, program_id: str, backend: Backend | None) -> None:
        slot = self._slots.pop(program_id, None)
        if slot is not None and slot.written:
            self._stale.setdefault(slot.backend, set()).add(slot.filename)
        if backend is None:
            return
        slot_id = None
        if slot is not None and slot.backend == backend.name and not self._shared(slot):
            slot_id = slot.slot_id
        offload = _offload(backend)
        stale = self._stale.pop(backend.name, set()) if slot_id is not None else set()
        if slot_id is None or offload is None or not stale:
            self.ctx.spawn("release", backend.release_program(program_id, None, slot_id))
            return
        erased = slot_id

        async def release_and_truncate() -> None:
            await backend.release_program(program_id, None, erased)
            for filename in sorted(stale):
                await offload.save_slot(erased, filename)  # the erased slot: an empty file

        self.ctx.spawn("release", release_and_truncate())

    def _shared(self, slot: _SlotFile) -> bool:
        return any(other.backend == slot.backend and other.slot_id == slot.slot_id
                   for other in self._slots.values())

    def tracked_programs(self) -> int:
        """Programs pinned to a slot, plus saved files still to be truncated (emptied by the
        erase that frees their engine's last shared slot)."""
        return len(self._slots) + sum(len(files) for files in self._stale.values())
