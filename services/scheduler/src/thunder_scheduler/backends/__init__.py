"""Engine backends: SGLang, vLLM and llama.cpp behind one interface (see ``base``)."""

from thunder_scheduler.backends.base import (
    Backend,
    BackendCapabilities,
    BackendInfo,
    BackendKind,
    BackendLoad,
    BackendUnavailable,
    RequestHints,
    SlotOffload,
    SlotOpResult,
    SlotState,
)
from thunder_scheduler.backends.registry import (
    BACKEND_TYPES,
    BackendSpec,
    make_backend,
    parse_backend_spec,
)

__all__ = [
    "BACKEND_TYPES",
    "Backend",
    "BackendCapabilities",
    "BackendInfo",
    "BackendKind",
    "BackendLoad",
    "BackendSpec",
    "BackendUnavailable",
    "RequestHints",
    "SlotOffload",
    "SlotOpResult",
    "SlotState",
    "make_backend",
    "parse_backend_spec",
]
