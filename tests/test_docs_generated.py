"""The reference docs generated from the code (settings tables, metrics) are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_match_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_configuration_doc_states_the_real_upstream_default() -> None:
    from thunder_scheduler.proxy.settings import ProxySettings

    doc = (ROOT / "docs" / "configuration.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `upstream_client` |"))
    assert f"| {ProxySettings().upstream_client} |" in row
