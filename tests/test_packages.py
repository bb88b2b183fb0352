"""The packages as PyPI would carry them: built with ``uv build``, their metadata complete, and
the wheels installed into a fresh virtual environment, where the installed
``thunder-scheduler serve`` runs and the README's LangGraph snippet goes through it.

The engine is the scripted OpenAI-compatible fake (``thunder_testkit.openai_server``) on
loopback, answering as SGLang does; everything else is the built wheels.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from thunder_core.launcher import launch
from thunder_testkit import until
from thunder_testkit.openai_server import ScriptedOpenAI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {
    "thunder-core": "packages/thunder-core",
    "thunder-scheduling": "packages/thunder-scheduling",
    "thunder-scheduler": "services/scheduler",
    "thunder-sim": "services/sim-engine",
    "thunder-langgraph": "packages/thunder-langgraph",
    "thunder-openhands": "packages/thunder-openhands",
}


def readme_langgraph_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("<!-- langgraph:start -->"):text.index("<!-- langgraph:end -->")]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def _uv() -> str:
    return shutil.which("uv") or str(Path(sys.executable).parent / "uv")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(["bash", str(ROOT / "scripts" / "build_packages.sh"), str(out)], check=True,
                   capture_output=True, timeout=600)
    return out


def _wheel(dist: Path, name: str) -> Path:
    (wheel,) = dist.glob(f"{name.replace('-', '_')}-*-py3-none-any.whl")
    return wheel


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(path))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_wheel_and_sdist_metadata(dist: Path, name: str) -> None:
    wheel = _wheel(dist, name)
    meta = _metadata(wheel)
    assert meta["Name"] == name
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Author"]
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.12" in classifiers
    assert any(c.startswith("Development Status") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    assert meta["Description-Content-Type"] == "text/markdown"
    readme = meta.get_payload()
    assert isinstance(readme, str) and len(readme.splitlines()) >= 25, "a real README"
    assert not re.search(r"\]\((?!https?://|#)[^)]*\)", readme), (
        "relative links break on PyPI: link to the repository instead")
    with zipfile.ZipFile(wheel) as archive:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    (sdist,) = dist.glob(f"{name.replace('-', '_')}-*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert any(n.endswith("/LICENSE") for n in archive.getnames())


def test_license_files_are_the_root_license() -> None:
    root = (ROOT / "LICENSE").read_text()
    assert "Apache License" in root
    for directory in PUBLISHED.values():
        assert (ROOT / directory / "LICENSE").read_text() == root, directory


def test_internal_dependencies_pin_the_contract_series(dist: Path) -> None:
    # thunder-core 0.1.x speaks contract 1: every package that needs it stays within 0.1
    for name in PUBLISHED:
        for requirement in _metadata(_wheel(dist, name)).get_all("Requires-Dist") or []:
            if requirement.startswith(("thunder-core", "thunder-scheduling")):
                assert "<0.2" in requirement, (name, requirement)


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("wheels-venv") / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUNDER_", "VIRTUAL_ENV"))}
    subprocess.run([_uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True,
                   env=env, timeout=120)

    def wheel_url(name: str, extras: str = "") -> str:
        return f"{name}{extras} @ {_wheel(dist, name).as_uri()}"

    subprocess.run(
        [_uv(), "pip", "install", "-q", "--no-config", "--python", str(venv / "bin" / "python"),
         wheel_url("thunder-core"), wheel_url("thunder-scheduling"),
         wheel_url("thunder-scheduler"), wheel_url("thunder-langgraph", "[openai]")],
        check=True, env=env, timeout=600,
    )
    return venv


def test_fresh_install_serves_and_runs_the_readme_snippet(fresh_venv: Path) -> None:
    python = str(fresh_venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THUNDER_", "VIRTUAL_ENV"))}
    # optional parts are extras: not installed here, and said so
    probe = subprocess.run(
        [python, "-c", "import sys, thunder_langgraph; thunder_langgraph.wrap; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('langchain', 'docker', 'aiohttp', 'matplotlib')))"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    assert probe.stdout.strip() == "[]"
    scheduler = str(fresh_venv / "bin" / "thunder-scheduler")
    version = subprocess.run([scheduler, "--version"], env=env, capture_output=True,
                             text=True, timeout=60, check=True)
    assert version.stdout.startswith("thunder-scheduler 0.1.0 (contract 1")
    refused = subprocess.run(
        [scheduler, "check-config", "--port", "0", "--upstream-client", "aiohttp"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert refused.returncode == 2
    assert "pip install 'thunder-scheduler[aiohttp]'" in refused.stderr

    fake = ScriptedOpenAI(script=["Bonjour !"])
    fake.start()
    service = launch(
        [scheduler, "serve", "--host", "127.0.0.1", "--port", "0",
         "--backend", f"sglang={fake.url}"],
        name="installed thunder-scheduler", ready=r"listening on (http://\S+)",
        health="/ready", env=env, timeout_s=60,
    )
    try:
        snippet = subprocess.run(
            [python, "-c", readme_langgraph_snippet()],
            env={**env, "THUNDER_SCHEDULER_URL": service.url, "THUNDER_MODEL": fake.model},
            capture_output=True, text=True, timeout=180, check=False,
        )
        assert snippet.returncode == 0, snippet.stderr[-3000:]
        assert "Bonjour" in snippet.stdout

        def ended() -> list[dict]:
            rows = httpx.get(f"{service.url}/v1/programs", timeout=10).json()["programs"]
            return [r for r in rows if r["framework"] == "langgraph"
                    and r["status"] == "terminated"]

        (row,) = until(ended, timeout_s=15, what="the snippet's program to end")
        assert (row["end_status"], row["requests"]) == ("ok", 1)
    finally:
        service.stop()
        fake.stop()
