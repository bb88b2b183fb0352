"""The backend conformance suite and slot offload against a REAL ``llama-server``.

Engines come from the ``llama_engines`` fixture (``tests/fixtures/llama_engines.py``):
SmolLM2-135M on free loopback ports, ``-t 1``. Slot offload is checked end to end:
a request pinned to slot 0 fills it; ``save`` writes it to the server's
``--slot-save-path``; ``erase`` empties it (``/slots`` shows no tokens held, and the
host-RAM prompt cache is off with ``--cache-ram 0`` so nothing else can bring the
prefix back); ``restore`` reloads it, and the next identical request on slot 0
reports more than 90 % of its prompt as cached tokens.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fixtures.llama_engines import MODEL_ALIAS, LlamaEngine
from test_backend_conformance import BackendConformance

from thunder_scheduler.backends import Backend, RequestHints, make_backend
from thunder_scheduler.backends.llamacpp import LlamaCppBackend, SlotOperationError

pytestmark = pytest.mark.llama

StartEngines = Callable[..., list[LlamaEngine]]

PROMPT = "Inventory report. " + " ".join(
    f"Box {i} holds {i * 7 % 13} red marbles and {i * 5 % 11} blue ones." for i in range(40)
)


class TestLlamaCppConformance(BackendConformance):
    @pytest.fixture
    async def backend(self, llama_engines: StartEngines) -> AsyncIterator[Backend]:
        (engine,) = llama_engines(n=1, ctx_tokens=4096, parallel=2)
        async with httpx.AsyncClient() as http:
            yield make_backend("llamacpp", "llama-0", engine.url, http)

    @pytest.fixture
    async def down_backend(self) -> AsyncIterator[Backend]:
        with socket.socket() as sock:  # a loopback port with nothing listening
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with httpx.AsyncClient() as http:
            yield make_backend("llamacpp", "llama-down", f"http://127.0.0.1:{port}", http)

    @pytest.fixture
    def expected_decoration(self) -> dict[str, Any]:
        return {"id_slot": 0}


@pytest.mark.parametrize(("ctx_tokens", "parallel"), [(4096, 2), (3072, 3)])
async def test_props_capacity_is_context_times_slots(
    llama_engines: StartEngines, ctx_tokens: int, parallel: int
) -> None:
    (engine,) = llama_engines(n=1, ctx_tokens=ctx_tokens, parallel=parallel)
    async with httpx.AsyncClient() as http:
        backend = LlamaCppBackend("l", engine.url, http)
        info = await backend.probe()
        assert info.capacity_tokens == ctx_tokens
        assert info.page_size_tokens == 1
        assert info.max_context_tokens == ctx_tokens // parallel
        assert info.models == (MODEL_ALIAS,)
        slots = await backend.slots()
        assert [s.slot_id for s in slots] == list(range(parallel))
        assert {s.n_ctx_tokens for s in slots} == {ctx_tokens // parallel}
        load = await backend.load()
        assert load.running_requests == 0 and load.used_tokens == 0


async def _chat_on_slot(http: httpx.AsyncClient, backend: LlamaCppBackend, slot: int) -> Any:
    body = backend.decorate(
        "/v1/chat/completions",
        {
            "model": MODEL_ALIAS,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 1,
            "temperature": 0,
        },
        RequestHints(program_id="p", request_id="p:1", slot_id=slot),
    )
    response = await http.post(f"{backend.base_url}/v1/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return response.json()["usage"]


async def test_slot_save_erase_restore_brings_the_prefix_back(
    llama_engines: StartEngines,
) -> None:
    (engine,) = llama_engines(n=1, ctx_tokens=4096, parallel=2, extra=["--cache-ram", "0"])
    async with httpx.AsyncClient() as http:
        backend = LlamaCppBackend("l", engine.url, http)
        cold = await _chat_on_slot(http, backend, 0)
        prompt_tokens = cold["prompt_tokens"]
        assert prompt_tokens > 300
        assert cold.get("prompt_tokens_details", {}).get("cached_tokens", 0) < prompt_tokens // 10

        saved = await backend.save_slot(0, "prog-p.bin")
        assert saved.n_tokens >= prompt_tokens
        assert (engine.slot_save_dir / "prog-p.bin").stat().st_size == saved.n_bytes

        await backend.release_program("p", None, 0)  # erases slot 0
        assert (await backend.load()).used_tokens == 0

        restored = await backend.restore_slot(0, "prog-p.bin")
        assert (restored.n_tokens, restored.n_bytes) == (saved.n_tokens, saved.n_bytes)
        assert (await backend.load()).used_tokens == saved.n_tokens

        warm = await _chat_on_slot(http, backend, 0)
        cached = warm["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0.9 * prompt_tokens, (cached, prompt_tokens)
        load = await backend.load()
        assert load.cached_tokens_total is not None and load.cached_tokens_total >= cached


async def test_slot_errors_from_the_real_server(llama_engines: StartEngines) -> None:
    (engine,) = llama_engines(n=1, ctx_tokens=2048, parallel=2)
    async with httpx.AsyncClient() as http:
        backend = LlamaCppBackend("l", engine.url, http)
        with pytest.raises(SlotOperationError, match="Unable to restore slot"):
            await backend.restore_slot(0, "never-saved.bin")
        with pytest.raises(SlotOperationError, match="Invalid filename"):
            await backend.save_slot(0, "../escape.bin")
        assert not (engine.slot_save_dir.parent / "escape.bin").exists()
        await backend.erase_slot(7)  # no such slot: the server answers 200, n_erased 0
