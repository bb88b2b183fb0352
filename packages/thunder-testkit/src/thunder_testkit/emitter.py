"""``RecordingEmitter``: a stand-in for ``thunder_core.LifecycleEmitter`` that sends nothing and
records each call as a tuple, for adapter tests that check which lifecycle events they emit."""

from __future__ import annotations

from typing import Any

__all__ = ["RecordingEmitter"]


class RecordingEmitter:
    """``events``: ``("start", program, framework)``, ``("tool", program, call, tool)``,
    ``("tool_end", program, call, status)``, ``("end", program, status)``,
    ``("hint", program, kind)`` (one per cache hint), in call order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def program_started(self, program_id: str, **metadata: Any) -> None:
        self.events.append(("start", program_id, metadata.get("framework")))

    def tool_started(self, program_id: str, call_id: str, tool_name: str, **extra: Any) -> None:
        self.events.append(("tool", program_id, call_id, tool_name))

    def tool_ended(self, program_id: str, call_id: str, status: Any = "ok", error: Any = None
                   ) -> None:
        self.events.append(("tool_end", program_id, call_id, str(status)))

    def program_ended(self, program_id: str, status: Any = "ok", reason: Any = None) -> None:
        self.events.append(("end", program_id, str(status)))

    def hinted(self, program_id: str, *hints: Any) -> None:
        for hint in hints:
            self.events.append(("hint", program_id, str(hint.kind)))
