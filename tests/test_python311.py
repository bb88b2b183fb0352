"""thunder-core and thunder-langgraph declare Python >= 3.11: installed into a 3.11 venv, their
own tests pass there. Skipped (saying so) on a machine without a Python 3.11 interpreter."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def _python311() -> str | None:
    candidates = [os.environ.get("THUNDER_PYTHON311", ""), shutil.which("python3.11") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11*/bin/python3.11")))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_core_and_langgraph_pass_their_tests_on_python_311(tmp_path: Path) -> None:
    python311 = _python311()
    if python311 is None:
        pytest.skip("no Python 3.11 interpreter (set THUNDER_PYTHON311)")
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUNDER_", "VIRTUAL_ENV"))}
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", python311, str(venv)], check=True, env=env,
                   timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, str(ROOT / "packages" / "thunder-core"),
         f"{ROOT / 'packages' / 'thunder-langgraph'}[openai]", "pytest", "pytest-asyncio",
         "pytest-timeout"],
        check=True, env=env, timeout=600,
    )
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
         "-o", "asyncio_mode=auto", "--rootdir", str(tmp_path),
         str(ROOT / "packages" / "thunder-core" / "tests"),
         str(ROOT / "packages" / "thunder-langgraph" / "tests")],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
