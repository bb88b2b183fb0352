"""Prefill-only requests the driver sends on a program's engine: the warm-up before a restore
(``Prewarm``) and the tool-aware prompt split (docs/prompt-split.md).

Both go out through the engine levers' ``prefill`` (one request shape per engine kind) and
share one sequence of request ids; the split's prefix becomes the body a later warm-up sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from thunder_core.contract import EnginePaths
from thunder_scheduler.backends.base import Backend
from thunder_scheduler.levers import EngineLevers, PrefillRequest
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduler.programs import ProgramRecords
from thunder_scheduler.request_body import PROMPT_BLOCK_TOKENS, prompt_blocks
from thunder_scheduling.prompt_split import SplitAction, SplitRoom, split_action

log = logging.getLogger("thunder_scheduler.driver")


class EnginePrefills:
    """Warm-ups and prompt splits of the driver's programs (per-program state lives in the
    driver's ``ProgramRecords``; this keeps only the request-id sequence)."""

    def __init__(
        self,
        programs: ProgramRecords,
        backends: Mapping[str, Backend],
        levers_of: Callable[[Backend], EngineLevers],
        metrics: ServiceMetrics,
        split_enabled: Callable[[], bool],
        split_room: Callable[[str, Iterable[str]], SplitRoom | None] | None = None,
    ) -> None:
        self._programs = programs
        self._backends = backends
        self._levers_of = levers_of
        self._metrics = metrics
        self._split_enabled = split_enabled
        self._split_room = split_room
        self._seq = 0

    def prewarm(self, program_id: str, backend_name: str) -> None:
        """Prefill the program's last known prompt on ``backend_name`` (before a restore)."""
        last = self._programs.last_body(program_id)
        backend = self._backends.get(backend_name)
        if last is None or backend is None:
            log.debug("no warm-up for %s on %s (no body or backend)", program_id, backend_name)
            return
        self._seq += 1
        record = self._programs.get(program_id)
        request = PrefillRequest(
            path=last[0], body=last[1], request_id=f"{program_id}:warm-{self._seq}",
            priority=record.priority if record is not None else None,
        )
        self._levers_of(backend).prefill(program_id, backend, request)

    def prompt_split(self, program_id: str, prefix: Mapping[str, Any],
                     uncached_tokens: int = 0) -> None:
        """``prefix`` (a chat body, ``next_prompt``) is the next prompt's known prefix of a
        response that ended in tool calls; ``uncached_tokens`` what the engine has not cached
        of it (the response's output: the prompt was just computed). It becomes the body a
        later warm-up sends and, as ``thunder_scheduling.prompt_split`` decides (paused,
        still cached, a tool that outlasts the core's keeping of its KV, no room), it is
        prefilled now on the program's engine at a priority below the program's own."""
        record = self._programs.get(program_id)
        if not self._split_enabled() or record is None or record.backend is None:
            return
        self._programs.remember_body(program_id, EnginePaths.CHAT_COMPLETIONS, prefix)
        backend = self._backends.get(record.backend)
        if backend is None:
            return
        keys = () if record.paused else prompt_blocks(prefix, PROMPT_BLOCK_TOKENS)
        room = None
        if self._split_room is not None and not record.paused:
            room = self._split_room(program_id, tool_names(prefix))
        action = split_action(
            paused=record.paused, cached=bool(keys) and keys[-1] in record.split_keys,
            uncached_tokens=uncached_tokens, room=room)
        self._metrics.prompt_splits.labels(action.value).inc()
        if action is not SplitAction.SENT:
            return
        record.split_keys = frozenset(keys)
        self._seq += 1
        own = record.priority if record.priority is not None else 0
        request = PrefillRequest(
            path=EnginePaths.CHAT_COMPLETIONS, body=prefix,
            request_id=f"{program_id}:split-{self._seq}", priority=own - 1,
        )
        self._levers_of(backend).prefill(program_id, backend, request)


def tool_names(prefix: Mapping[str, Any]) -> list[str]:
    """The function names of the tool calls that end ``prefix`` (its last message's)."""
    messages = prefix.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    calls = last.get("tool_calls") if isinstance(last, Mapping) else None
    return [c["function"]["name"] for c in calls or ()
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
            and isinstance(c["function"].get("name"), str)]
