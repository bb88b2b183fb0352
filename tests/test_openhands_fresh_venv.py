"""A fresh virtual environment with thunder-openhands, openhands-sdk and
openhands-tools runs the unmodified example through a running scheduler, toggled by
``THUNDER_SCHEDULER_URL`` alone (the wheel's ``.pth`` hook; the example never calls enable).

``uv venv`` + ``uv pip install`` into a temp dir (uv's cache makes reruns fast). thunder-core is
installed from its directory too: it is a workspace package, not on the registry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from thunder_core.launcher import wait_http
from thunder_scheduler.settings import load_settings
from thunder_testkit.openai_server import FakeToolCall, ScriptedOpenAI
from thunder_testkit.service import start_service_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def test_fresh_venv_runs_the_example_through_the_scheduler(
    tmp_path: Path, scripted_openai: ScriptedOpenAI
) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUNDER_", "VIRTUAL_ENV"))}
    subprocess.run([*_uv(), "venv", "-q", "--python", sys.executable, str(venv)],
                   check=True, env=env, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [*_uv(), "pip", "install", "-q", "--python", str(python),
         str(ROOT / "packages" / "thunder-core"), str(ROOT / "packages" / "thunder-openhands"),
         f"openhands-sdk=={version('openhands-sdk')}",
         f"openhands-tools=={version('openhands-tools')}"],
        check=True, env=env, timeout=600,
    )
    service = start_service_thread(load_settings({"backends": [f"sglang={scripted_openai.url}"]}))
    try:
        wait_http(f"{service.url}/ready", timeout_s=20)
        scripted_openai.script = [[FakeToolCall("terminal", {"command": "ls /"})], "done"]
        run_env = {**env, "THUNDER_SCHEDULER_URL": service.url, "MODEL": "scripted",
                   "LLM_BASE_URL": f"{scripted_openai.url}/v1"}
        result = subprocess.run(
            [str(python), str(ROOT / "examples" / "openhands" / "run_agent.py")],
            capture_output=True, text=True, env=run_env, timeout=300, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        match = re.search(r"conversation (\S+) finished", result.stdout)
        assert match, result.stdout + result.stderr[-2000:]
        row = httpx.get(f"{service.url}/v1/programs/{match.group(1)}").json()
        assert row["framework"] == "openhands", row    # the .pth toggle started the program
        assert row["end_status"] == "ok" and row["requests"] == 2 and row["tool_calls"] == 1
    finally:
        service.stop()
