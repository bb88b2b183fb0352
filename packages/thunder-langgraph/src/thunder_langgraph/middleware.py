"""``ThunderMiddleware`` for ``langchain.agents.create_agent``: the agent's runs as programs.

    agent = create_agent(model, tools, middleware=[ThunderMiddleware()])

* ``before_agent`` starts a program (a fresh id per invocation, or the thread id with
  ``identity="thread"``) and keeps its id in the agent state (``thunder_program_id``);
* ``wrap_model_call`` / ``awrap_model_call`` add ``X-Thunder-Program-Id`` to the model request
  (``model_settings["extra_headers"]``, which ``ChatOpenAI`` sends as HTTP headers);
* ``wrap_tool_call`` / ``awrap_tool_call`` send tool start / tool end with the tool's name and
  the model's tool-call id, ``error`` when the tool raises;
* ``after_agent`` ends the program (``ok``); a model or tool call that raises out of the agent
  ends it with ``error`` (``cancelled`` for cancellation) before the exception propagates.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain_core.callbacks import BaseCallbackManager, CallbackManager
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.utils.function_calling import convert_to_openai_tool

from thunder_core import LifecycleEmitter, ProgramEndStatus, ToolEndStatus
from thunder_core.contract import PROGRAM_ID_HEADER
from thunder_langgraph import tool_step
from thunder_langgraph.callbacks import _end_status
from thunder_langgraph.dispatch import (
    StreamingToolDispatcher,
    eligible,
    find_dispatcher,
    prestarted,
    streaming_dispatch_enabled,
)
from thunder_langgraph.emitters import emitter_for
from thunder_langgraph.hints import HintTracker, expected_duration_s
from thunder_langgraph.wrap import Identity, _thread_program_id

STATE_KEY = "thunder_program_id"


@contextmanager
def _attached(dispatcher: StreamingToolDispatcher | None) -> Iterator[None]:
    """Add ``dispatcher`` to the callbacks of the model call made inside (``create_agent``'s
    model node invokes its model with the current child config)."""
    if dispatcher is None:
        yield
        return
    config = var_child_runnable_config.get() or {}
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(dispatcher, inherit=False)
    else:
        manager = CallbackManager.configure(callbacks, [dispatcher])
    token = var_child_runnable_config.set({**config, "callbacks": manager})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


class ThunderState(AgentState[Any]):
    thunder_program_id: NotRequired[str]


def _thread_id(runtime: Any) -> str | None:
    try:
        from langgraph.config import get_config

        return (get_config().get("configurable") or {}).get("thread_id")
    except Exception:
        return None


class ThunderMiddleware(AgentMiddleware[ThunderState, Any]):
    """Agent middleware that makes each agent invocation a Thunder program."""

    state_schema = ThunderState

    def __init__(
        self,
        scheduler_url: str | None = None,
        *,
        identity: Identity | str = Identity.INVOCATION,
        emitter: LifecycleEmitter | None = None,
        streaming_dispatch: bool | None = None,
        **program_metadata: Any,
    ) -> None:
        super().__init__()
        self.emitter = emitter or emitter_for(scheduler_url)
        self.identity = Identity(identity)
        self.streaming_dispatch = streaming_dispatch_enabled(streaming_dispatch)
        self.program_metadata = {"framework": "langgraph", **program_metadata}
        self._started: set[str] = set()
        self._dispatchers: dict[str, StreamingToolDispatcher] = {}
        self._early_tools: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._tool_pool = ThreadPoolExecutor(8, thread_name_prefix="thunder-tool")
        self._trackers: dict[str, HintTracker] = {}
        self._schemas: tuple[tuple[int, ...], list[dict[str, Any]]] = ((), [])

    # -- program ------------------------------------------------------------------------------

    def _begin(self, runtime: Any) -> dict[str, Any]:
        program_id: str | None = None
        if self.identity is Identity.THREAD:
            thread_id = _thread_id(runtime)
            if thread_id is None:
                raise ValueError("ThunderMiddleware(identity='thread') needs a thread_id")
            program_id = _thread_program_id(str(thread_id))
            if program_id in self._started:
                return {STATE_KEY: program_id}
        program_id = program_id or f"lc-{uuid.uuid4()}"
        self._started.add(program_id)
        self.emitter.program_started(program_id, **self.program_metadata)
        return {STATE_KEY: program_id}

    def _close_dispatcher(self, program_id: str | None) -> None:
        with self._lock:
            dispatcher = self._dispatchers.pop(program_id, None) if program_id else None
            if program_id and self.identity is Identity.INVOCATION:
                self._trackers.pop(program_id, None)
            self._early_tools = {k for k in self._early_tools if k[0] != program_id}
        if dispatcher is not None:
            dispatcher.close()

    def _finish(self, state: Any) -> None:
        program_id = state.get(STATE_KEY) if isinstance(state, dict) else None
        self._close_dispatcher(program_id)
        if program_id and self.identity is Identity.INVOCATION:
            self._started.discard(program_id)
            self.emitter.program_ended(program_id, ProgramEndStatus.OK)

    def _fail(self, program_id: str | None, error: BaseException) -> None:
        self._close_dispatcher(program_id)
        if program_id and program_id in self._started and self.identity is Identity.INVOCATION:
            self._started.discard(program_id)
            self.emitter.program_ended(program_id, _end_status(error), repr(error)[:500])

    def before_agent(self, state: ThunderState, runtime: Any) -> dict[str, Any] | None:
        return self._begin(runtime)

    async def abefore_agent(self, state: ThunderState, runtime: Any) -> dict[str, Any] | None:
        return self._begin(runtime)

    def after_agent(self, state: ThunderState, runtime: Any) -> dict[str, Any] | None:
        self._finish(state)
        return None

    async def aafter_agent(self, state: ThunderState, runtime: Any) -> dict[str, Any] | None:
        self._finish(state)
        return None

    # -- model calls --------------------------------------------------------------------------

    @staticmethod
    def _tagged(request: Any) -> tuple[Any, str | None]:
        program_id = (request.state or {}).get(STATE_KEY)
        if not program_id:
            return request, None
        settings = dict(request.model_settings or {})
        headers = dict(settings.get("extra_headers") or {})
        headers[PROGRAM_ID_HEADER] = program_id
        settings["extra_headers"] = headers
        return request.override(model_settings=settings), program_id

    def _dispatcher(self, program_id: str | None, request: Any) -> StreamingToolDispatcher | None:
        """This program's dispatcher, with the tools of this model call (``request.tools``)."""
        if not (self.streaming_dispatch and program_id and tool_step.install()):
            return None
        if find_dispatcher(var_child_runnable_config.get()) is not None:
            return None  # wrap() already dispatches this run
        tools = {t.name: t for t in request.tools or () if eligible(t)}
        if not tools:
            return None

        def started(call_id: str, name: str) -> None:
            with self._lock:
                self._early_tools.add((program_id, call_id))
            tool = tools.get(name)
            self.emitter.tool_started(program_id, call_id, name, expected_duration_s=(
                expected_duration_s(getattr(tool, "metadata", None))))

        with self._lock:
            dispatcher = self._dispatchers.get(program_id)
            if dispatcher is None:
                dispatcher = StreamingToolDispatcher({None: tools}, on_start=started,
                                                     executor=self._tool_pool)
                self._dispatchers[program_id] = dispatcher
            else:
                dispatcher.tools_by_node = {None: tools}
        return dispatcher

    def _hint(self, program_id: str | None, request: Any) -> None:
        """Shared-prefix and compaction hints from this model request (``hints``)."""
        if not program_id:
            return
        with self._lock:
            tracker = self._trackers.setdefault(program_id, HintTracker())
            key = tuple(id(t) for t in request.tools or ())
            if self._schemas[0] != key:
                self._schemas = (key, [convert_to_openai_tool(t) for t in request.tools or ()])
            schemas = self._schemas[1]
        messages = [request.system_message, *request.messages] if request.system_message \
            else list(request.messages)
        hints = tracker.model_call(("model",), messages, schemas)
        if hints:
            self.emitter.hinted(program_id, *hints)

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        tagged, program_id = self._tagged(request)
        self._hint(program_id, request)
        try:
            with _attached(self._dispatcher(program_id, request)):
                return handler(tagged)
        except BaseException as exc:
            self._fail(program_id, exc)
            raise

    async def awrap_model_call(
        self, request: Any, handler: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        tagged, program_id = self._tagged(request)
        self._hint(program_id, request)
        try:
            with _attached(self._dispatcher(program_id, request)):
                return await handler(tagged)
        except BaseException as exc:
            self._fail(program_id, exc)
            raise

    # -- tool calls ---------------------------------------------------------------------------

    def _tool_start(self, request: Any) -> tuple[str | None, str]:
        program_id = (request.state or {}).get(STATE_KEY) if isinstance(request.state, dict) \
            else None
        call = request.tool_call
        call_id = str(call.get("id") or uuid.uuid4())
        with self._lock:
            early = (program_id, call_id) in self._early_tools
            self._early_tools.discard((program_id, call_id))
        if program_id and not early:
            metadata = getattr(request.tool, "metadata", None)
            self.emitter.tool_started(program_id, call_id, str(call.get("name") or "tool"),
                                      expected_duration_s=expected_duration_s(metadata))
        return program_id, call_id

    def _prestarted(self, request: Any) -> Any:
        program_id = (request.state or {}).get(STATE_KEY) if isinstance(request.state, dict) \
            else None
        with self._lock:
            dispatcher = self._dispatchers.get(program_id) if program_id else None
        return prestarted(request, dispatcher)

    def _tool_end(self, program_id: str | None, call_id: str, result: Any) -> None:
        if not program_id:
            return
        failed = getattr(result, "status", None) == "error"
        self.emitter.tool_ended(
            program_id, call_id, ToolEndStatus.ERROR if failed else ToolEndStatus.OK
        )

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        program_id, call_id = self._tool_start(request)
        try:
            result = handler(self._prestarted(request))
        except BaseException as exc:
            if program_id:
                self.emitter.tool_ended(program_id, call_id, ToolEndStatus.ERROR, repr(exc)[:500])
            self._fail(program_id, exc)
            raise
        self._tool_end(program_id, call_id, result)
        return result

    async def awrap_tool_call(
        self, request: Any, handler: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        program_id, call_id = self._tool_start(request)
        try:
            result = await handler(self._prestarted(request))
        except BaseException as exc:
            if program_id:
                self.emitter.tool_ended(program_id, call_id, ToolEndStatus.ERROR, repr(exc)[:500])
            self._fail(program_id, exc)
            raise
        self._tool_end(program_id, call_id, result)
        return result
