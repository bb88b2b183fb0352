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

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState

from thunder_core import LifecycleEmitter, ProgramEndStatus, ToolEndStatus
from thunder_core.contract import PROGRAM_ID_HEADER
from thunder_langgraph.callbacks import _end_status
from thunder_langgraph.emitters import emitter_for
from thunder_langgraph.wrap import Identity, _thread_program_id

STATE_KEY = "thunder_program_id"


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
        **program_metadata: Any,
    ) -> None:
        super().__init__()
        self.emitter = emitter or emitter_for(scheduler_url)
        self.identity = Identity(identity)
        self.program_metadata = {"framework": "langgraph", **program_metadata}
        self._started: set[str] = set()

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

    def _finish(self, state: Any) -> None:
        program_id = state.get(STATE_KEY) if isinstance(state, dict) else None
        if program_id and self.identity is Identity.INVOCATION:
            self._started.discard(program_id)
            self.emitter.program_ended(program_id, ProgramEndStatus.OK)

    def _fail(self, program_id: str | None, error: BaseException) -> None:
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

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        tagged, program_id = self._tagged(request)
        try:
            return handler(tagged)
        except BaseException as exc:
            self._fail(program_id, exc)
            raise

    async def awrap_model_call(
        self, request: Any, handler: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        tagged, program_id = self._tagged(request)
        try:
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
        if program_id:
            self.emitter.tool_started(program_id, call_id, str(call.get("name") or "tool"))
        return program_id, call_id

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
            result = handler(request)
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
            result = await handler(request)
        except BaseException as exc:
            if program_id:
                self.emitter.tool_ended(program_id, call_id, ToolEndStatus.ERROR, repr(exc)[:500])
            self._fail(program_id, exc)
            raise
        self._tool_end(program_id, call_id, result)
        return result
