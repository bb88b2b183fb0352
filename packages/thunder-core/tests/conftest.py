"""Each test starts with no registered scheduler: ``LifecycleClient`` registers its base URL
with the httpx hook (process-wide), and a registration left by one test would change which
requests another test's hook tags."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from thunder_core import forget_schedulers


@pytest.fixture(autouse=True)
def _no_registered_scheduler() -> Iterator[None]:
    forget_schedulers()
    yield
    forget_schedulers()
