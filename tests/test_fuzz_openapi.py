"""Property-based fuzzing of the live service from its own OpenAPI document: no 5xx, ever.

schemathesis reads ``/openapi.json`` of a real ``thunder-scheduler serve`` (client and admin
keys set, one simulated SGLang engine behind it) and sends generated requests, valid and
invalid, to every operation: proxy routes (bodies as ``openapi_doc`` describes them),
lifecycle routes, ops routes. The only check is that no answer is a server error (5xx): bad
input must get a 4xx with a reason, and what the engine answers passes through. Sized for CI
on 2 cores (``MAX_EXAMPLES`` per operation, a couple of minutes in all).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from thunder_core.launcher import ChildProcess, environ_without, launch, stop_all
from thunder_testkit import until

KEY = "fuzz-key"
MAX_EXAMPLES = 25

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_url() -> Iterator[str]:
    engine = ChildProcess(
        [sys.executable, "-m", "thunder_sim", "serve", "--host", "127.0.0.1", "--port", "0",
         "--time-scale", "1000", "--log-level", "warning"],
        name="thunder-sim serve", ready=r"thunder-sim ready: (http://\S+)")
    children = [engine]
    try:
        engine_url = engine.wait_ready(60)
        service = launch(
            [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1",
             "--port", "0", "--backend", f"sim@sglang={engine_url}", "--api-key", KEY,
             "--admin-key", KEY, "--log-level", "warning"],
            name="thunder-scheduler serve", ready=r"listening on (http://\S+)",
            health="/health", timeout_s=60, env=environ_without("THUNDER_"))
        children.append(service)
        until(lambda: httpx.get(f"{service.url}/ready", timeout=5).status_code == 200,
              timeout_s=60, interval_s=0.2, what="the service ready")
        yield service.url
        assert "Traceback" not in service.output()
    finally:
        stop_all(children, 10)


@pytest.fixture(scope="module")
def api_schema(fuzz_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json")


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_a_server_error(api_schema: Any, fuzz_url: str,
                                             mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    operations = _operations(api_schema)
    assert len(operations) >= 14  # proxy, ops and lifecycle routes are all described
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=fuzz_url, headers=headers,
                                   checks=[not_a_server_error], timeout=60)

        try:
            fuzz()
        except Unsatisfiable:  # an operation without inputs has no invalid form
            assert mode is GenerationMode.NEGATIVE
    assert calls >= len(operations)
