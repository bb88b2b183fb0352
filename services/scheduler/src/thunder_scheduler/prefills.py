"""Prefill-only requests the driver sends on a program's engine: the warm-up before a restore
(``Prewarm``) and the tool-aware prompt split (docs/prompt-split.md).

Both go out through the engine levers' ``prefill`` (one request shape per engine kind) and
share one sequence of request ids; the split's prefix becomes the body a later warm-up sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from thunder_core.contract import EnginePaths
from thunder_scheduler.backends.base import Backend
from thunder_scheduler.levers import EngineLevers, PrefillRequest
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduler.next_prompt import SplitAction, split_action
from thunder_scheduler.programs import ProgramRecords
from thunder_scheduler.request_body import PROMPT_BLOCK_TOKENS, prompt_blocks

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
    ) -> None:
        self._programs = programs
        self._backends = backends
        self._levers_of = levers_of
        self._metrics = metrics
        self._split_enabled = split_enabled
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

    def prompt_split(self, program_id: str, prefix: Mapping[str, Any]) -> None:
        """``prefix`` (a chat body, ``next_prompt``) is the next prompt's known prefix of a
        response that ended in tool calls. It becomes the body a later warm-up sends and,
        unless the program is paused or that prefix is still cached, it is prefilled now on
        the program's engine at a priority below the program's own."""
        record = self._programs.get(program_id)
        if not self._split_enabled() or record is None or record.backend is None:
            return
        self._programs.remember_body(program_id, EnginePaths.CHAT_COMPLETIONS, prefix)
        backend = self._backends.get(record.backend)
        if backend is None:
            return
        keys = () if record.paused else prompt_blocks(prefix, PROMPT_BLOCK_TOKENS)
        action = split_action(record.paused, keys, record.split_keys)
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
