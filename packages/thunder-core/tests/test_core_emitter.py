"""The off-hot-path emitter: ordered delivery, never blocking, warning on loss."""

from __future__ import annotations

import json
import logging
import socket
import threading

import httpx
import pytest

from thunder_core import LifecycleEmitter, ThunderClient


def test_events_are_delivered_in_order_off_the_calling_thread() -> None:
    paths: list[str] = []
    threads: set[str] = set()
    gate = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        gate.wait(5)
        threads.add(threading.current_thread().name)
        paths.append(request.url.path)
        return httpx.Response(200, json={
            "program_id": "p", "status": "active", "phase": "reasoning",
            **(json.loads(request.content) if request.url.path == "/v1/programs" else {}),
        })

    client = ThunderClient("http://s.test", transport=httpx.MockTransport(handler))
    emitter = LifecycleEmitter(client=client)
    emitter.program_started("p", framework="langgraph")
    emitter.tool_started("p", "c1", "bash")
    emitter.tool_ended("p", "c1")
    emitter.program_ended("p")
    # every call returned while the scheduler still held the first request: nothing was sent
    # on the caller's thread (the calls' cost is measured in bench/core/bench_emitter.py)
    assert paths == []
    gate.set()
    assert emitter.flush(5)
    assert paths == ["/v1/programs", "/v1/programs/p/tools", "/v1/programs/p/tools/c1/end",
                     "/v1/programs/p/end"]
    assert threads == {"thunder-emitter"}
    assert emitter.stats.sent == 4 and emitter.stats.failed == 0
    emitter.close()


def test_unreachable_scheduler_warns_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emitter = LifecycleEmitter(f"http://127.0.0.1:{port}", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="thunder_core.emitter"):
        for i in range(3):
            emitter.tool_started("lost", f"c{i}", "bash")
        assert emitter.flush(5)
    assert emitter.stats.failed == 3
    warnings = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(warnings) == 1
    assert "not delivered" in warnings[0].getMessage()
    emitter.close()


def test_full_queue_drops_newest_and_counts_it() -> None:
    block = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        block.wait(5)
        return httpx.Response(204)

    client = ThunderClient("http://s.test", transport=httpx.MockTransport(handler))
    emitter = LifecycleEmitter(client=client, max_queue=2)
    for i in range(10):
        emitter.tool_ended("p", f"c{i}")
    assert emitter.stats.dropped >= 7
    block.set()
    assert emitter.flush(5)
    emitter.close()
