"""A start-up that fails is one line naming what failed, with a hint, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_tools_without_docker_fail_in_one_line_with_a_hint(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUNDER_", "DOCKER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "thunder_scheduler", "serve", "--host", "127.0.0.1", "--port",
         "0", "--tools-enabled", "--tools-docker-host", "unix:///nonexistent/docker.sock"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("thunder-scheduler: error: tool manager:")
    assert "hint:" in errors[0] and "--tools-enabled" in errors[0]
