"""Workspace-wide test isolation (applies to every test path of ``pyproject.toml``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from thunder_core import forget_schedulers


@pytest.fixture(autouse=True)
def _fresh_scheduler_registry() -> Iterator[None]:
    """A ``ThunderClient`` registers its scheduler for the process-wide httpx hook; each test
    starts without the ones earlier tests made."""
    forget_schedulers()
    yield
    forget_schedulers()
