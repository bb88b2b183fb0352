"""Cache hints the LangGraph adapter sends (``thunder_core.contract.HintKind``).

What a graph knows and the engine cannot, read from each model call of a program:

* ``shared_prefix``: the call's system prompt and tool schemas (the prefix every run of this
  agent repeats) as ``shared_prefix_id(system, tools)``, sent once per program and prefix;
* ``context_compacted``: a model call of the same graph node whose messages no longer contain
  all the messages of that node's previous call (a summarisation or trimming step rewrote the
  history), so the program's old KV will not be read again;
* ``back_in``: a tool whose metadata holds ``thunder_expected_duration_s`` is reported with that
  expected duration on its tool start (``ToolStart.expected_duration_s``, which the core reads);
* the end of a conversation is the program end (``wrap().end_thread()``, the run's end).

``HintTracker`` is the pure part (what to send for one model call); ``CacheHintsHandler`` feeds
it from LangChain's ``on_chat_model_start`` for ``wrap()``, and ``ThunderMiddleware`` feeds it
from its model requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from thunder_core import LifecycleEmitter
from thunder_core.contract import CacheHint, HintKind, shared_prefix_id

EXPECTED_DURATION_METADATA_KEY = "thunder_expected_duration_s"
"""Tool metadata key: how long the tool usually runs, in seconds (``@tool(...)`` then
``tool.metadata = {...}``, or ``StructuredTool(metadata=...)``)."""


def expected_duration_s(metadata: Mapping[str, Any] | None) -> float | None:
    value = (metadata or {}).get(EXPECTED_DURATION_METADATA_KEY)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True,
                                                               default=str)


class HintTracker:
    """The hints of one program, from its model calls (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prefixes: set[str] = set()
        self._last_ids: dict[Any, frozenset[str]] = {}
        self._memo: tuple[Any, Any, str] | None = None

    def _prefix_id(self, system: Any, tools: Any) -> str:
        memo = self._memo
        if memo is not None and memo[0] is system and memo[1] is tools:
            return memo[2]
        prefix = shared_prefix_id(None if system is None else _text(system),
                                  list(tools) if tools else None)
        self._memo = (system, tools, prefix)
        return prefix

    def model_call(
        self, key: Any, messages: Sequence[Any], tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[CacheHint]:
        """Hints for a model call of graph node ``key`` with these messages and tool schemas."""
        system = None
        if messages and getattr(messages[0], "type", None) == "system":
            system = messages[0].content
        ids = frozenset(str(m.id) for m in messages if getattr(m, "id", None))
        hints: list[CacheHint] = []
        with self._lock:
            if system is not None or tools:
                prefix = self._prefix_id(system, tools)
                if prefix not in self._prefixes:
                    self._prefixes.add(prefix)
                    hints.append(CacheHint(kind=HintKind.SHARED_PREFIX, prefix_id=prefix))
            previous = self._last_ids.get(key)
            if previous and not previous <= ids:
                hints.append(CacheHint(kind=HintKind.CONTEXT_COMPACTED,
                                       reason=f"{len(previous - ids)} earlier messages gone"))
            self._last_ids[key] = ids
        return hints


def node_key(metadata: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The graph node a call runs in, without LangGraph's per-step task ids."""
    namespace = str((metadata or {}).get("langgraph_checkpoint_ns") or "")
    node = str((metadata or {}).get("langgraph_node") or "")
    return (*(part.split(":")[0] for part in namespace.split("|") if part), node)


class CacheHintsHandler(BaseCallbackHandler):
    """Sends the hints of one wrapped program's model calls."""

    run_inline = True
    raise_error = False
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True
    ignore_llm = True

    def __init__(self, emitter: LifecycleEmitter, program_id: str) -> None:
        self.emitter = emitter
        self.program_id = program_id
        self.tracker = HintTracker()

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID,
        metadata: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        tools = (kwargs.get("invocation_params") or {}).get("tools")
        for batch in messages[:1]:
            hints = self.tracker.model_call(node_key(metadata), batch, tools)
            if hints:
                self.emitter.hinted(self.program_id, *hints)
