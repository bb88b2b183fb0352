"""The real ``thunder-scheduler serve`` process on loopback: CLI, lifecycle, ops, shutdown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
from fixtures.scheduler_service import RunningProcess


def test_serve_without_engines_is_alive_but_not_ready(
    scheduler_process: Callable[..., RunningProcess],
) -> None:
    service = scheduler_process("--admin-key", "adm", env={"THUNDER_TICK_S": "0.5"})
    with httpx.Client(base_url=service.url, timeout=5.0) as http:
        assert http.get("/health").json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert "no backend" in ready.json()["error"]["message"]
        assert http.post("/v1/programs", json={"program_id": "p"}).status_code == 401
        auth = {"Authorization": "Bearer adm"}
        started = http.post("/v1/programs", json={"program_id": "p"}, headers=auth)
        assert started.status_code == 201
        assert http.post("/v1/programs/p/end", json={}, headers=auth).json()["status"] == (
            "terminated"
        )
        # OpenAI requests without a healthy engine: 503 with a reason, not a hang
        chat = http.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
        })
        assert chat.status_code == 503
        assert "no healthy backend" in chat.json()["error"]["message"]
        assert "thunder_programs" in http.get("/metrics").text
    service.stop()
    # uvicorn finishes the lifespan shutdown, then re-raises the SIGTERM it caught
    assert service.process.returncode in (0, -15)
    log = service.output
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_serve_with_unknown_backend_type_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thunder_scheduler", "serve", "--backend", "tgi=http://x:1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "--backend" in result.stderr
    assert "allowed: llamacpp, sglang, vllm" in result.stderr
    assert "Traceback" not in result.stderr
