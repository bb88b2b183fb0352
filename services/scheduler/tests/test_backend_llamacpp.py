"""LlamaCppBackend error paths against a fake llama-server (the real one: tests/)."""

from __future__ import annotations

import httpx
import pytest

from thunder_scheduler.backends import BackendUnavailable, RequestHints, SlotOffload
from thunder_scheduler.backends.llamacpp import LlamaCppBackend, SlotOperationError
from thunder_testkit.engines import FakeLlamaServer


def make(fake: FakeLlamaServer, **kwargs: int) -> LlamaCppBackend:
    return LlamaCppBackend(
        "l", "http://127.0.0.1:1", httpx.AsyncClient(transport=fake.transport()), **kwargs
    )


async def test_capacity_is_sum_of_slot_contexts() -> None:
    info = await make(FakeLlamaServer(n_slots=3, slot_n_ctx=4096)).probe()
    assert info.capacity_tokens == 3 * 4096
    assert info.page_size_tokens == 1
    assert info.max_context_tokens == 4096
    assert info.models == ("smollm2",)


async def test_capacity_from_props_when_slots_endpoint_off() -> None:
    fake = FakeLlamaServer(n_slots=2, slot_n_ctx=1000, slots_endpoint=False)
    backend = make(fake)
    assert (await backend.probe()).capacity_tokens == 2000
    load = await backend.load()
    assert load.used_tokens is None and load.running_requests == 0  # from /metrics
    with pytest.raises(BackendUnavailable, match="--no-slots"):
        await backend.slots()


async def test_capacity_override_for_unified_kv() -> None:
    assert (await make(FakeLlamaServer(), capacity_tokens=16384).probe()).capacity_tokens == 16384
    with pytest.raises(ValueError, match="positive"):
        make(FakeLlamaServer(), capacity_tokens=0)


async def test_load_counts_processing_slots_and_tokens() -> None:
    fake = FakeLlamaServer(processing={1}, slot_tokens={0: 300, 1: 100})
    load = await make(fake).load()
    assert load.running_requests == 1
    assert load.used_tokens == 400
    assert load.cached_tokens_total == pytest.approx(200)
    assert load.prompt_tokens_total == pytest.approx(600)  # processed + cached
    assert load.cache_hit_rate == pytest.approx(200 / 600)


def test_decorate_pins_slot_only_when_asked() -> None:
    backend = make(FakeLlamaServer())
    assert backend.decorate("/v1/chat/completions", {}, RequestHints("p", "p:1")) == {}
    body = backend.decorate("/v1/chat/completions", {}, RequestHints("p", "p:1", slot_id=1))
    assert body == {"id_slot": 1}


async def test_slot_save_erase_restore_roundtrip_on_fake() -> None:
    fake = FakeLlamaServer(slot_tokens={0: 336})
    backend = make(fake)
    assert isinstance(backend, SlotOffload)
    saved = await backend.save_slot(0, "p1.bin")
    assert (saved.n_tokens, saved.duration_ms) == (336, 8.5)
    await backend.release_program("p1", None, 0)  # erases slot 0
    assert 0 not in fake.slot_tokens
    restored = await backend.restore_slot(0, "p1.bin")
    assert restored.n_tokens == 336 and fake.slot_tokens[0] == 336


async def test_slot_errors_are_clear() -> None:
    backend = make(FakeLlamaServer())
    with pytest.raises(SlotOperationError, match="Unable to restore slot"):
        await backend.restore_slot(0, "missing.bin")
    with pytest.raises(SlotOperationError, match="Invalid id_slot"):
        await backend.save_slot(9, "x.bin")
    await backend.erase_slot(9)  # the real server answers 200, n_erased 0
    off = make(FakeLlamaServer(slot_save_path=False))
    with pytest.raises(SlotOperationError, match="--slot-save-path"):
        await off.save_slot(0, "x.bin")


async def test_loading_model_503_is_unavailable() -> None:
    fake = FakeLlamaServer(status_overrides={"/props": 503})
    with pytest.raises(BackendUnavailable, match="503"):
        await make(fake).probe()
