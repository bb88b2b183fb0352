"""The repository carries everything the demo needs: a clone of HEAD in an empty folder (no
sibling folders, no environment variables naming data) bootstraps and runs the demo's short
form (virtual mode) from the sessions shipped under ``data/traces``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_from_a_bare_clone(tmp_path: Path) -> None:
    clone = tmp_path / "thunder"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
                   check=True, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thunder"]
    traces = clone / "data" / "traces" / "claude-code-sessions"
    assert (traces / "LICENSE").is_file() and (traces / "README.md").is_file()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("THUNDER_", "VIRTUAL_ENV", "PYTHONPATH"))}
    subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=clone, env=env, check=True,
                   capture_output=True, timeout=600)
    out = subprocess.run(
        [str(clone / ".venv" / "bin" / "thunder-sim"), "demo", "--virtual", "--no-progress",
         "--duration-s", "60", "--sessions", "12", "--concurrency", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "498 session files" in out.stdout
    assert "ratio:" in out.stdout
