"""The dependency ranges hold at both ends: the workspace resolved with uv's lowest-direct and
highest resolutions passes a fast subset of the tests (``scripts/resolution_matrix.sh``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("resolution", ["lowest-direct", "highest"])
def test_fast_subset_passes_at_this_end_of_the_ranges(resolution: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "resolution_matrix.sh"), resolution],
        capture_output=True, text=True, timeout=1100, check=False,
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-3000:])
    assert "resolved: " in result.stdout and " passed" in result.stdout
