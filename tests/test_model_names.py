"""Model names as the engine treats them: through the scheduler, a request naming a model gets
exactly the status and error body the engine behind it gives, per engine kind.

The scheduler has no model rule of its own; it passes the request on (and routes by model only
when backends serve different models). What each engine does, from its source:

* **SGLang 0.5.x** (here the simulated engine, which models 0.5.23): the OpenAI endpoints
  accept any ``model`` and echo it in the answer, with or without ``--served-model-name``
  (sgl-project/sglang issues 7035, 9294, 10065, 31404). Its repository also carries
  ``TestStrictModelValidation`` (400 "The model `x` does not exist. The served model name is
  `y`"), a check the 0.5.x releases the issues describe do not make; through the scheduler
  either answer is the engine's.
* **vLLM**: 404 ``{"error": {"message": "The model `x` does not exist.", "type":
  "NotFoundError", "param": "model", "code": 404}}`` for a name it does not serve
  (``OpenAIServing._check_model``), played here by a small real HTTP engine in the test.
* **llama.cpp** ``llama-server``: the real server (``llama`` marker).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from fixtures.scheduler_service import RunningService

from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings
from thunder_testkit import until
from thunder_testkit.engines import FakeVLLM

NAMES = ["default", "wrong-model-name", "served:adapter"]
MESSAGES = [{"role": "user", "content": "hi"}]


def _ask(url: str, model: str) -> tuple[int, Any]:
    answer = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": model, "messages": MESSAGES, "max_tokens": 2})
    body = answer.json()
    if answer.status_code < 400:  # ids and times differ; what names the model must not
        body = {"model": body.get("model"), "object": body.get("object")}
    return answer.status_code, body


def _through_scheduler(scheduler_service: Callable[..., RunningService], spec: str) -> str:
    service = scheduler_service(load_settings({"backends": [spec]}))
    wait_http(f"{service.url}/ready", timeout_s=60)
    return service.url


def _assert_same_answers(direct: str, proxied: str, names: list[str]) -> None:
    for model in names:
        assert _ask(proxied, model) == _ask(direct, model), model


@pytest.mark.slow
def test_sglang_any_model_name_is_answered_as_the_engine_answers(
    sim_fleet: Callable[..., list[str]], scheduler_service: Callable[..., RunningService],
) -> None:
    [engine] = sim_fleet(1, time_scale=50.0)
    proxied = _through_scheduler(scheduler_service, f"sglang={engine}")
    served = httpx.get(f"{engine}/v1/models", timeout=5).json()["data"][0]["id"]
    _assert_same_answers(engine, proxied, [*NAMES, served])
    assert _ask(proxied, "default")[0] == 200  # what SGLang's docs send


@pytest.mark.slow
def test_sglang_with_a_served_model_name_is_answered_as_the_engine_answers(
    sim_fleet: Callable[..., list[str]], scheduler_service: Callable[..., RunningService],
) -> None:
    [engine] = sim_fleet(1, time_scale=50.0, extra_args=["--served-model-name", "served"])
    proxied = _through_scheduler(scheduler_service, f"sglang={engine}")
    _assert_same_answers(engine, proxied, [*NAMES, "served"])


class _VllmEngine:
    """A real HTTP engine answering like vLLM: its control plane from ``FakeVLLM``, chat
    completions for its one served model, 404 for any other name (vLLM's body)."""

    def __init__(self) -> None:
        self.fake = FakeVLLM(model="served")
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model")
        if model != self.fake.model:
            return web.json_response(status=404, data={"error": {
                "message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                "param": "model", "code": 404}})
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    async def _control(self, request: web.Request) -> web.Response:
        answer = self.fake.handle(httpx.Request(request.method, str(request.url)))
        return web.Response(status=answer.status_code, body=answer.content,
                            content_type=answer.headers.get("content-type", "text/plain")
                            .split(";")[0])

    def start(self) -> str:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_route("*", "/{tail:.*}", self._control)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        return self.url

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def vllm_engine() -> Iterator[str]:
    engine = _VllmEngine()
    yield engine.start()
    engine.stop()


def test_vllm_unknown_model_gets_the_engines_404(
    vllm_engine: str, scheduler_service: Callable[..., RunningService],
) -> None:
    proxied = _through_scheduler(scheduler_service, f"vllm={vllm_engine}")
    _assert_same_answers(vllm_engine, proxied, [*NAMES, "served"])
    status, body = _ask(proxied, "default")
    assert status == 404 and body["error"]["message"] == "The model `default` does not exist."


@pytest.mark.llama
def test_llamacpp_model_names_are_answered_as_llama_server_answers(
    llama_engines: Callable[..., list[Any]], scheduler_service: Callable[..., RunningService],
) -> None:
    [engine] = llama_engines(1)
    proxied = _through_scheduler(scheduler_service, f"llamacpp={engine.url}")
    _assert_same_answers(engine.url, proxied, [*NAMES, "smollm2"])


def test_backends_serving_different_models_route_by_model(
    scheduler_service: Callable[..., RunningService],
) -> None:
    a, b = _VllmEngine(), _VllmEngine()
    b.fake.model = "other"
    try:
        url_a, url_b = a.start(), b.start()
        service = scheduler_service(load_settings({
            "backends": [f"a@vllm={url_a}", f"b@vllm={url_b}"]}))
        until(lambda: len(httpx.get(f"{service.url}/v1/models", timeout=5).json()["data"]) >= 2,
              timeout_s=60, interval_s=0.1, what="the scheduler to list both models")
        for i in range(6):  # whichever backend a program lands on, its model is served
            for model in ("served", "other"):
                answer = httpx.post(f"{service.url}/v1/chat/completions", timeout=30,
                                    headers={"X-Thunder-Program-Id": f"p{i}-{model}"},
                                    json={"model": model, "messages": MESSAGES})
                assert answer.status_code == 200, answer.text
                assert answer.json()["model"] == model
        # a name nobody serves is still the engine's to answer
        assert _ask(service.url, "nobody")[0] == 404
    finally:
        a.stop()
        b.stop()


def test_a_program_whose_first_request_the_engine_refused_does_not_stay_live(
    vllm_engine: str, scheduler_service: Callable[..., RunningService],
) -> None:
    proxied = _through_scheduler(scheduler_service, f"vllm={vllm_engine}")

    def chat(program: str, model: str) -> int:
        return httpx.post(f"{proxied}/v1/chat/completions", timeout=30,
                          headers={"X-Thunder-Program-Id": program},
                          json={"model": model, "messages": MESSAGES}).status_code

    def status(program: str) -> str | None:
        view = httpx.get(f"{proxied}/v1/programs/{program}", timeout=5)
        return view.json()["status"] if view.status_code == 200 else None

    assert chat("refused", "nope") == 404
    assert status("refused") in (None, "terminated")
    # a program that has run keeps living through a refused request
    assert chat("running", "served") == 200
    assert chat("running", "nope") == 404
    assert status("running") not in (None, "terminated")
