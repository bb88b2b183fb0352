"""The backend conformance suite, run here against the SGLang and vLLM fakes.

:class:`BackendConformance` holds the behaviour every ``Backend`` must show. A concrete
test class provides three fixtures: ``backend`` (up and answering), ``down_backend``
(the same kind, whose engine refuses connections) and ``expected_decoration`` (the
fields ``decorate`` must add for ``HINTS``). The SGLang and vLLM engines cannot run on
these machines, so their classes below use ``httpx.MockTransport`` fakes shaped from
the engines' source (``thunder_testkit.engines``); the llama.cpp class in
``test_backend_conformance_llama.py`` runs the same suite against a real
``llama-server``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from thunder_scheduler.backends import (
    Backend,
    BackendUnavailable,
    RequestHints,
    SlotOffload,
    make_backend,
)
from thunder_testkit.engines import FakeSGLang, FakeVLLM

HINTS = RequestHints(program_id="prog-1", request_id="prog-1:4", slot_id=0)


class BackendConformance:
    """Not collected by itself (no ``Test`` prefix); subclass it with the three fixtures."""

    async def test_satisfies_the_protocols(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend, SlotOffload) == backend.capabilities.slot_offload

    async def test_probe_reports_finite_capacity_and_page_size(self, backend: Backend) -> None:
        info = await backend.probe()
        assert isinstance(info.capacity_tokens, int) and 0 < info.capacity_tokens < 10**12
        assert isinstance(info.page_size_tokens, int) and info.page_size_tokens >= 1
        assert info.page_size_tokens <= info.capacity_tokens
        assert info.models, "probe must name the served model(s)"
        assert all(isinstance(m, str) and m for m in info.models)
        if info.max_context_tokens is not None:
            assert info.max_context_tokens > 0

    async def test_load_numbers_are_non_negative(self, backend: Backend) -> None:
        load = await backend.load()
        for name in ("used_tokens", "running_requests", "waiting_requests"):
            value = getattr(load, name)
            assert value is None or (isinstance(value, int) and value >= 0), name
        for name in ("prompt_tokens_total", "cached_tokens_total"):
            value = getattr(load, name)
            assert value is None or (math.isfinite(value) and value >= 0), name
        if load.cache_hit_rate is not None:
            assert 0.0 <= load.cache_hit_rate <= 1.0

    async def test_decorate_adds_the_engine_fields_in_place(
        self, backend: Backend, expected_decoration: dict[str, Any]
    ) -> None:
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        original = dict(body)
        result = backend.decorate("/v1/chat/completions", body, HINTS)
        assert result is body
        assert body == {**original, **expected_decoration}
        headers = backend.request_headers(HINTS)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())

    async def test_abort_and_release_of_unknown_ids_do_not_raise(self, backend: Backend) -> None:
        await backend.abort("no-such-program:99")
        await backend.release_program("no-such-program", None, None)

    async def test_down_engine_raises_backend_unavailable(self, down_backend: Backend) -> None:
        with pytest.raises(BackendUnavailable) as probe_error:
            await down_backend.probe()
        assert down_backend.name in str(probe_error.value)
        with pytest.raises(BackendUnavailable):
            await down_backend.load()


class TestSGLangConformance(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        async with httpx.AsyncClient(transport=FakeSGLang().transport()) as http:
            yield make_backend("sglang", "fake-sglang", "http://gpu1:30000", http)

    @pytest.fixture
    async def down_backend(self) -> AsyncIterator[Backend]:
        async with httpx.AsyncClient(transport=FakeSGLang(down=True).transport()) as http:
            yield make_backend("sglang", "fake-sglang-down", "http://gpu1:30000", http)

    @pytest.fixture
    def expected_decoration(self) -> dict[str, Any]:
        return {"rid": "prog-1:4"}


class TestVLLMConformance(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        async with httpx.AsyncClient(transport=FakeVLLM().transport()) as http:
            yield make_backend("vllm", "fake-vllm", "http://gpu2:8000", http)

    @pytest.fixture
    async def down_backend(self) -> AsyncIterator[Backend]:
        async with httpx.AsyncClient(transport=FakeVLLM(down=True).transport()) as http:
            yield make_backend("vllm", "fake-vllm-down", "http://gpu2:8000", http)

    @pytest.fixture
    def expected_decoration(self) -> dict[str, Any]:
        return {"request_id": "prog-1:4"}
