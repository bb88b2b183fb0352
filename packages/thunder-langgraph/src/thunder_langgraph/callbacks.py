"""LangChain callback handlers that turn runs into Thunder lifecycle events.

``ToolEventsHandler`` is attached by ``wrap()`` to the root config of one program: every tool
run under it (``ToolNode``, ``create_agent``'s tools, tools called from plain nodes) sends tool
start / tool end with the tool's name and the model's tool-call id.

``AutoProgramHandler`` is the zero-code toggle's handler (installed by LangChain's configure
hook when ``THUNDER_SCHEDULER_URL`` is set): each root *chain* run (a graph, an agent, any LCEL
chain invoked at top level) becomes a program whose id is the root run id; it also maps every
child run to its program so HTTP requests made inside are tagged. Root runs that a ``wrap()``
already made a program are left to the wrapper.

Both only enqueue events (``run_inline``: no thread hop); the emitter sends them off the agent's
hot path.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from thunder_core import LifecycleEmitter, ProgramEndStatus, ToolEndStatus
from thunder_langgraph import resolver
from thunder_langgraph.hints import expected_duration_s


def _end_status(error: BaseException) -> ProgramEndStatus:
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
        return ProgramEndStatus.CANCELLED
    return ProgramEndStatus.ERROR


class _ToolCalls:
    """run id → (program, call id) of tool runs in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[UUID, tuple[str, str]] = {}

    def start(self, run_id: UUID, program_id: str, call_id: str) -> None:
        with self._lock:
            self._calls[run_id] = (program_id, call_id)

    def end(self, run_id: UUID) -> tuple[str, str] | None:
        with self._lock:
            return self._calls.pop(run_id, None)


def _call_id(run_id: UUID, kwargs: dict[str, Any]) -> str:
    call_id = kwargs.get("tool_call_id")
    return str(call_id) if call_id else f"run-{run_id}"


class ToolEventsHandler(BaseCallbackHandler):
    """Tool start / end events for the tools of one wrapped program."""

    run_inline = True
    raise_error = False
    # Only tool runs matter here: LangChain skips this handler for every other kind of run,
    # so chains, nodes and model calls pay nothing for it.
    ignore_chain = True
    ignore_llm = True
    ignore_chat_model = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self, emitter: LifecycleEmitter, program_id: str) -> None:
        self.emitter = emitter
        self.program_id = program_id
        self._calls = _ToolCalls()

    def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
        parent_run_id: UUID | None = None, **kwargs: Any,
    ) -> None:
        call_id = _call_id(run_id, kwargs)
        self._calls.start(run_id, self.program_id, call_id)
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self.emitter.tool_started(self.program_id, call_id, str(name),
                                  expected_duration_s=expected_duration_s(kwargs.get("metadata")))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._calls.end(run_id)
        if call is not None:
            self.emitter.tool_ended(call[0], call[1])

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._calls.end(run_id)
        if call is not None:
            self.emitter.tool_ended(call[0], call[1], ToolEndStatus.ERROR, repr(error)[:500])


class AutoProgramHandler(BaseCallbackHandler):
    """Zero-code mode: every root chain run is a program (id = the root run id)."""

    run_inline = True
    raise_error = False

    # LangChain's configure hook creates a handler per configure call; the state is shared.
    _calls = _ToolCalls()
    _roots: set[UUID] = set()
    _lock = threading.Lock()

    def __init__(self, emitter: LifecycleEmitter | None = None) -> None:
        self._emitter = emitter

    @property
    def emitter(self) -> LifecycleEmitter:
        if self._emitter is None:
            from thunder_langgraph.emitters import emitter_for

            resolver.install()
            self._emitter = emitter_for(None)
        return self._emitter

    def _map(self, run_id: UUID, parent_run_id: UUID | None) -> str | None:
        program_id = resolver.program_of_run(parent_run_id)
        if program_id is not None:
            resolver.remember_run(run_id, program_id)
        return program_id

    def on_chain_start(
        self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
        parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is not None:
            self._map(run_id, parent_run_id)
            return
        if metadata and resolver.PROGRAM_METADATA_KEY in metadata:
            return  # wrap() owns this program
        program_id = str(run_id)
        resolver.remember_run(run_id, program_id)
        with self._lock:
            self._roots.add(run_id)
        name = (serialized or {}).get("name") or kwargs.get("name") or "chain"
        self.emitter.program_started(
            program_id, framework="langgraph", tags={"mode": "auto", "root": str(name)[:100]}
        )

    def _end_root(self, run_id: UUID, status: ProgramEndStatus, reason: str | None) -> None:
        with self._lock:
            if run_id not in self._roots:
                resolver.forget_run(run_id)
                return
            self._roots.discard(run_id)
        program_id = resolver.program_of_run(run_id) or str(run_id)
        resolver.forget_run(run_id)
        self.emitter.program_ended(program_id, status, reason)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        reason = "interrupted" if isinstance(outputs, dict) and "__interrupt__" in outputs else None
        self._end_root(run_id, ProgramEndStatus.OK, reason)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if type(error).__name__ == "GraphInterrupt":
            self._end_root(run_id, ProgramEndStatus.OK, "interrupted")
        else:
            self._end_root(run_id, _end_status(error), repr(error)[:500])

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
        parent_run_id: UUID | None = None, **kwargs: Any,
    ) -> None:
        self._map(run_id, parent_run_id)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: Any, *, run_id: UUID,
        parent_run_id: UUID | None = None, **kwargs: Any,
    ) -> None:
        self._map(run_id, parent_run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        resolver.forget_run(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        resolver.forget_run(run_id)

    def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
        parent_run_id: UUID | None = None, **kwargs: Any,
    ) -> None:
        program_id = self._map(run_id, parent_run_id)
        if program_id is None:
            return
        call_id = _call_id(run_id, kwargs)
        self._calls.start(run_id, program_id, call_id)
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self.emitter.tool_started(program_id, call_id, str(name),
                                  expected_duration_s=expected_duration_s(kwargs.get("metadata")))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        resolver.forget_run(run_id)
        call = self._calls.end(run_id)
        if call is not None:
            self.emitter.tool_ended(call[0], call[1])

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        resolver.forget_run(run_id)
        call = self._calls.end(run_id)
        if call is not None:
            self.emitter.tool_ended(call[0], call[1], ToolEndStatus.ERROR, repr(error)[:500])
