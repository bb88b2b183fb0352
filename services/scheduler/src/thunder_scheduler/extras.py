"""Optional parts of the service and the pip extra that installs each.

``docker`` (the tool manager's Docker runtimes) and ``aiohttp`` (one of the upstream clients)
are extras of ``thunder-scheduler``, not hard dependencies: ``missing_extra(name)`` says, before
anything is started, which ``pip install`` a chosen setting needs, so ``check-config`` and
``serve`` refuse it with that line instead of an ImportError at the first request.
"""

from __future__ import annotations

import importlib.util
from typing import Final

__all__ = ["EXTRAS", "MissingExtraError", "missing_extra", "require_extra"]

EXTRAS: Final[dict[str, str]] = {
    "docker": "tools",
    "aiohttp": "aiohttp",
}
"""Importable module -> the ``thunder-scheduler[...]`` extra that installs it."""


class MissingExtraError(ImportError):
    """An optional dependency a setting needs is not installed."""


def missing_extra(module: str, needed_by: str) -> str | None:
    """None when ``module`` is importable, else a one-line fix naming the extra."""
    if importlib.util.find_spec(module) is not None:
        return None
    extra = EXTRAS.get(module, module)
    return (
        f"{needed_by} needs the Python package {module!r}, which is not installed: "
        f"pip install 'thunder-scheduler[{extra}]'"
    )


def require_extra(module: str, needed_by: str) -> None:
    """Raise :class:`MissingExtraError` with the fix when ``module`` is missing."""
    problem = missing_extra(module, needed_by)
    if problem is not None:
        raise MissingExtraError(problem)
