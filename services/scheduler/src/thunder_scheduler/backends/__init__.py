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

__all__ = [
    "Backend",
    "BackendCapabilities",
    "BackendInfo",
    "BackendKind",
    "BackendLoad",
    "BackendUnavailable",
    "RequestHints",
    "SlotOffload",
    "SlotOpResult",
    "SlotState",
]
