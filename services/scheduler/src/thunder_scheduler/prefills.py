"""Prefill-only requests the driver sends on a program's engine: the warm-up before a restore
(``Prewarm``), the tool-aware prompt split (docs/prompt-split.md) and the shared-prefix
warm-up of a ``shared_prefix`` cache hint (docs/cache-hints.md).

All go out through the engine levers' ``prefill`` (one request shape per engine kind) and
share one sequence of request ids; the split's prefix becomes the body a later warm-up sends.

Shared prefix: a ``shared_prefix`` hint names the system prompt + tool schemas every program of
an agent repeats. Once the program has a backend and a remembered chat body whose first system
message and ``tools`` hash to that id (``shared_prefix_id``), a prefill of just that prefix
(system message + tools) goes to the backend at ``SHARED_PREFIX_PRIORITY``, once per backend
and prefix (the last ``SHARED_PREFIXES_MAX`` remembered). SGLang (and the simulated engine)
with ``--radix-eviction-policy priority`` gives a cached node the highest priority of the
requests that reached it and evicts the lowest first, so the shared prefix is evicted last;
without that flag it is a plain warm-up. A body whose prefix hashes otherwise is not sent
(``mismatch``). A ``context_compacted`` hint forgets the program's remembered body and its
last split, so no warm-up or split re-prefills a history that is gone.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from thunder_core.contract import EnginePaths, shared_prefix_id
from thunder_scheduler.backends.base import Backend
from thunder_scheduler.levers import EngineLevers, PrefillRequest
from thunder_scheduler.metrics import ServiceMetrics
from thunder_scheduler.programs import ProgramRecords
from thunder_scheduler.request_body import PROMPT_BLOCK_TOKENS, prompt_blocks
from thunder_scheduling.prompt_split import SplitAction, SplitRoom, split_action

log = logging.getLogger("thunder_scheduler.driver")

SHARED_PREFIX_PRIORITY: Final = 2**31 - 1
"""Engine priority of a shared-prefix warm-up (contract convention: higher first; the SGLang
backend negates it under ``--schedule-low-priority-values-first``)."""
SHARED_PREFIXES_MAX: Final = 4096
"""(backend, prefix id) pairs remembered as warmed."""


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
        self._warmed: OrderedDict[tuple[str, str], None] = OrderedDict()

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

    # -- cache hints ----------------------------------------------------------------------------

    def shared_prefix(self, program_id: str, prefix_id: str) -> str:
        """A ``shared_prefix`` hint: warm that prefix now or once the program has a body and a
        backend (``warm_shared_prefix`` is called again at each admission). The result."""
        record = self._programs.get(program_id)
        if record is None:
            return "unknown"
        record.shared_prefix = prefix_id
        return self.warm_shared_prefix(program_id)

    def warm_shared_prefix(self, program_id: str) -> str:
        """Send the pending shared-prefix warm-up of ``program_id`` if it can go now; what
        happened: ``sent``, ``cached`` (warmed there before), ``mismatch``, ``pending``."""
        record = self._programs.get(program_id)
        if record is None or record.shared_prefix is None:
            return "none"
        last = self._programs.last_body(program_id)
        backend = self._backends.get(record.backend) if record.backend is not None else None
        if last is None or backend is None or last[0] != EnginePaths.CHAT_COMPLETIONS:
            return "pending"
        found = shared_prefix_body(last[1])
        wanted, record.shared_prefix = record.shared_prefix, None
        if found is None or found[0] != wanted:
            result = "mismatch"
        elif (backend.name, wanted) in self._warmed:
            self._warmed.move_to_end((backend.name, wanted))
            result = "cached"
        else:
            self._warmed[(backend.name, wanted)] = None
            while len(self._warmed) > SHARED_PREFIXES_MAX:
                self._warmed.popitem(last=False)
            self._seq += 1
            self._levers_of(backend).prefill(program_id, backend, PrefillRequest(
                path=EnginePaths.CHAT_COMPLETIONS, body=found[1],
                request_id=f"{program_id}:shared-{self._seq}",
                priority=SHARED_PREFIX_PRIORITY))
            result = "sent"
        self._metrics.cache_hint_levers.labels("shared_prefix", result).inc()
        return result

    def context_compacted(self, program_id: str) -> None:
        """A ``context_compacted`` hint: forget the remembered body and the last split."""
        record = self._programs.get(program_id)
        if record is not None:
            record.split_keys = frozenset()
        self._programs.forget_body(program_id)
        self._metrics.cache_hint_levers.labels("context_compacted", "forgotten").inc()


def shared_prefix_body(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The shared prefix of a chat body: its id and a body of just its first system message
    and ``tools`` (None when it has no system message)."""
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if not isinstance(first, Mapping) or first.get("role") not in ("system", "developer"):
        return None
    content = first.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content
                          if isinstance(part, Mapping))
    if not isinstance(content, str):
        return None
    tools = body.get("tools")
    tools = list(tools) if isinstance(tools, list) else None
    prefix: dict[str, Any] = {"messages": [dict(first)]}
    if "model" in body:
        prefix["model"] = body["model"]
    if tools:
        prefix["tools"] = tools
    return shared_prefix_id(content, tools), prefix


def tool_names(prefix: Mapping[str, Any]) -> list[str]:
    """The function names of the tool calls that end ``prefix`` (its last message's)."""
    messages = prefix.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    calls = last.get("tool_calls") if isinstance(last, Mapping) else None
    return [c["function"]["name"] for c in calls or ()
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
            and isinstance(c["function"].get("name"), str)]
