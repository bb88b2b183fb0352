"""llama.cpp's saved slots as the host tier, driven by the core's commands, on a REAL
``llama-server`` (SmolLM2-135M, one slot, ``--cache-ram 0`` so that only a slot restore can
bring a prefix back):

program A runs on slot 0; the core pauses it with its KV in host (``Pause(kv_tier=HOST)``:
the driver saves the slot); program B takes the slot and overwrites A's KV; the core's
``Prewarm`` ahead of A's predicted return restores the slot (no prefill), and A's next request
finds its prefix cached. When A ends its saved file waits, B still using the slot; when B
ends, the slot is erased and A's file truncated (an empty slot saved over it). The
control is the same run with the KV put nowhere (``kv_tier=GONE``): A returns to a cold slot.

The core is scripted (``thunder_testkit.cores.ScriptedCore``) so the pause lands between A's
and B's requests; the choice of place is the core's, tested in ``packages/thunder-scheduling``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fixtures.llama_engines import MODEL_ALIAS, LlamaEngine

from thunder_scheduler.backends import RequestHints
from thunder_scheduler.backends.llamacpp import LlamaCppBackend
from thunder_scheduler.clock import ManualClock
from thunder_scheduler.driver import Driver
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduling.commands import Admit, Pause, Prewarm, Release
from thunder_scheduling.events import ProgramEnded, RequestArrived
from thunder_scheduling.kv_tiers import KvTier
from thunder_testkit import until_async
from thunder_testkit.cores import ScriptedCore

pytestmark = [pytest.mark.llama, pytest.mark.slow]

StartEngines = Callable[..., list[LlamaEngine]]


def _prompt(subject: str) -> str:
    return f"Inventory report on {subject}. " + " ".join(
        f"Shelf {i} holds {i * 7 % 13} {subject} and {i * 5 % 11} spare parts." for i in range(30)
    )


async def _chat(http: httpx.AsyncClient, backend: LlamaCppBackend, driver: Driver,
                program: str, text: str) -> dict[str, Any]:
    slot = driver.slot_of(program, backend.name)
    body = backend.decorate("/v1/chat/completions", {
        "model": MODEL_ALIAS, "messages": [{"role": "user", "content": text}],
        "max_tokens": 1, "temperature": 0,
    }, RequestHints(program_id=program, request_id=f"{program}:1", slot_id=slot))
    response = await http.post(f"{backend.base_url}/v1/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    usage = dict(response.json()["usage"])
    usage["cached"] = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return usage


def _count(driver: Driver, direction: str) -> float:
    value = driver.metrics.registry.get_sample_value(
        "thunder_host_kv_transfers_total", {"direction": direction})
    return value or 0.0


@pytest.mark.parametrize("tier", ["host", "gone"])
async def test_a_paused_program_comes_back_from_its_saved_slot_with_its_prefix_cached(
    llama_engines: StartEngines, tier: str,
) -> None:
    (engine,) = llama_engines(n=1, ctx_tokens=4096, parallel=1, extra=["--cache-ram", "0"])
    async with httpx.AsyncClient() as http:
        backend = LlamaCppBackend("l", engine.url, http, slot_store_ratio=4.0)
        info = await backend.probe()
        assert info.host_capacity_tokens == 4 * info.capacity_tokens
        core = ScriptedCore([
            [Admit("A", "A:1", "l")],
            [Admit("B", "B:1", "l")],
            [Pause("A", "l", 400, kv_tier=KvTier(tier))],
            [Prewarm("A", "l")],
            [Release("A", "l", "ended")],
            [Release("B", "l", "ended")],
        ])
        driver = Driver(core, {"l": backend}, ManualClock(0.0), ServiceMetrics(),
                        slot_offload=True, total_slots=lambda name: 1)
        for program in ("A", "B"):
            driver.arrive(program, f"{program}:1", RequestArrived(
                at=0.0, program_id=program, request_id=f"{program}:1",
                prompt_tokens_estimate=400))
        assert driver.slot_of("A", "l") == driver.slot_of("B", "l") == 0

        a_text = _prompt("red marbles")
        first = await _chat(http, backend, driver, "A", a_text)
        assert first["prompt_tokens"] > 300 and first["cached"] < 50
        driver.feed(ProgramEnded(at=1.0, program_id="x"))                # -> Pause A
        if tier == "host":
            await until_async(lambda: _count(driver, "offload") == 1, what="the slot save")
        other = await _chat(http, backend, driver, "B", _prompt("blue pebbles"))
        assert other["cached"] < 50  # B's prompt shares only the chat template: A's KV is gone
        driver.feed(ProgramEnded(at=2.0, program_id="x"))                # -> Prewarm A
        if tier == "host":
            await until_async(lambda: _count(driver, "load_back") == 1, what="the slot restore")

        back = await _chat(http, backend, driver, "A", a_text + " Count them again.")
        if tier == "host":
            assert back["cached"] >= first["prompt_tokens"] - 10, (back, first)
        else:
            assert back["cached"] < 50, back  # the control: nothing brought A's prefix back

        driver.feed(ProgramEnded(at=3.0, program_id="A"))                # -> Release A
        driver.feed(ProgramEnded(at=4.0, program_id="B"))                # -> Release B
        await until_async(lambda: not driver.tracked()["background_tasks"],
                          what="the releases")
        assert driver.tracked()["levers.llamacpp"] == 0
        await driver.aclose()
    files = list(engine.slot_save_dir.glob("thunder-*.bin"))
    if tier == "host":
        [saved] = files
        assert saved.stat().st_size <= 64  # erased, then the empty slot saved over it
    else:
        assert files == []
