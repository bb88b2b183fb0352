"""The scheduler's container image (``deploy/Dockerfile``) builds with the project's own Docker
daemon and serves: ``scripts/docker_image_smoke.sh`` builds it offline (a local Python base
when no registry is reachable) and checks ``--version``, ``/health``, ``/ready``, ``/metrics``,
``/live`` and the non-root user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def test_image_builds_and_serves(docker_host: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker_image_smoke.sh")],
        env={**os.environ, "DOCKER_HOST": docker_host, "THUNDER_IMAGE": "thunder-scheduler:test"},
        capture_output=True, text=True, timeout=850, check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "smoke test passed" in result.stdout
    assert "runs as uid 65532" in result.stdout


def test_compose_file_names_the_image_recipe_and_the_scheduler_flags() -> None:
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    assert "dockerfile: Dockerfile" in compose
    assert "--enable-cache-report --enable-metrics" in compose
    assert "@sglang=http://sglang-0:30000" in compose
