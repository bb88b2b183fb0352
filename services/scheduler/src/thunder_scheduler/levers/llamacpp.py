"""llama.cpp's levers: programs pinned to slots, slot save / restore as KV offload.

With ``slot_offload`` on (``--llamacpp-slot-offload``) and the backend's slot count known, a
program is pinned at its first admission on a backend to the least used slot (ties: lowest
id), and its requests carry ``id_slot``. ``paused`` saves the slot to
``thunder-<sha256(program)[:32]>.bin`` (the engine's ``--slot-save-path``); ``resumed`` on the
same backend restores it, on another backend drops the pin (its saved KV is on the old engine).
``ended`` erases the slot through ``Backend.release_program``, but only when no other live
program is pinned to the same slot.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from thunder_scheduler.backends.base import Backend, BackendKind, SlotOffload
from thunder_scheduler.levers.base import BaseLevers, EngineHints, LeverContext

__all__ = ["LlamaCppLevers"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _SlotFile:
    backend: str
    slot_id: int
    filename: str
    saved: bool = False


def _offload(backend: Backend) -> SlotOffload | None:
    if not backend.capabilities.slot_offload or not isinstance(backend, SlotOffload):
        return None
    return backend


class LlamaCppLevers(BaseLevers):
    kind = BackendKind.LLAMACPP

    def __init__(self, ctx: LeverContext) -> None:
        super().__init__(ctx)
        self._slots: dict[str, _SlotFile] = {}

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

    def paused(self, program_id: str, backend: Backend) -> None:
        slot = self._slots.get(program_id)
        offload = _offload(backend)
        if slot is None or offload is None or slot.backend != backend.name:
            return

        async def save() -> None:
            result = await offload.save_slot(slot.slot_id, slot.filename)
            slot.saved = True
            log.info("paused %s: saved slot %d of %s (%d tokens)", program_id, slot.slot_id,
                     backend.name, result.n_tokens)

        self.ctx.spawn("slot_save", save())

    def resumed(self, program_id: str, backend: Backend) -> None:
        slot = self._slots.get(program_id)
        if slot is None:
            return
        if slot.backend != backend.name:
            del self._slots[program_id]  # migrated: its saved KV is on the old engine
            return
        offload = _offload(backend)
        if not slot.saved or offload is None:
            return

        async def restore() -> None:
            result = await offload.restore_slot(slot.slot_id, slot.filename)
            log.info("resumed %s: restored slot %d of %s (%d tokens)", program_id,
                     slot.slot_id, backend.name, result.n_tokens)

        self.ctx.spawn("slot_restore", restore())

    def ended(self, program_id: str, backend: Backend | None) -> None:
        slot = self._slots.pop(program_id, None)
        if backend is None:
            return
        slot_id = None
        if slot is not None and slot.backend == backend.name and not self._shared(slot):
            slot_id = slot.slot_id
        self.ctx.spawn("release", backend.release_program(program_id, None, slot_id))

    def _shared(self, slot: _SlotFile) -> bool:
        return any(other.backend == slot.backend and other.slot_id == slot.slot_id
                   for other in self._slots.values())

    def tracked_programs(self) -> int:
        return len(self._slots)
