"""Engine levers, one set per engine kind, chosen by ``Backend.kind`` (``base.py`` has the
interface and when the driver calls each method)."""

from __future__ import annotations

from thunder_scheduler.backends.base import BackendKind
from thunder_scheduler.levers.base import (
    LEVER_TIMEOUT_S,
    BaseLevers,
    EngineHints,
    EngineLevers,
    LeverContext,
    PrefillRequest,
)
from thunder_scheduler.levers.llamacpp import LlamaCppLevers
from thunder_scheduler.levers.sglang import SGLangLevers

LEVERS: dict[BackendKind, type[BaseLevers]] = {
    BackendKind.SGLANG: SGLangLevers,
    BackendKind.VLLM: BaseLevers,
    BackendKind.LLAMACPP: LlamaCppLevers,
}
"""The lever set of each engine kind."""


def make_levers(ctx: LeverContext) -> dict[BackendKind, EngineLevers]:
    """One lever set per engine kind, sharing ``ctx``."""
    return {kind: cls(ctx) for kind, cls in LEVERS.items()}


__all__ = [
    "LEVERS",
    "LEVER_TIMEOUT_S",
    "EngineHints",
    "EngineLevers",
    "LeverContext",
    "PrefillRequest",
    "make_levers",
]
