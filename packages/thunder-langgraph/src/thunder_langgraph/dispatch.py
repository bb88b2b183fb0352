"""Streaming tool dispatch: a tool call starts the moment the model has streamed its arguments.

Without it a LangGraph agent waits for the whole model response, then ``ToolNode`` runs the
calls. With it (on by default in ``wrap()`` and ``ThunderMiddleware``, off with
``streaming_dispatch=False`` or ``THUNDER_STREAMING_DISPATCH=0``):

1. the model call streams (``StreamingToolDispatcher`` is a streaming callback handler, which
   makes LangChain chat models use their streaming API, as ``stream_mode="messages"`` does);
2. ``ToolCallAssembler`` follows each tool call's argument fragments in the chunks. A call is
   *closed* when its arguments parse as one JSON object and the next chunk of the stream adds
   nothing to them (one chunk of look-ahead: a model that streams ``{"a": 1}`` and then more
   text for the same call is not started early). Parallel calls close one by one;
3. a closed call whose tool the graph's ``ToolNode`` would run (same name, no injected
   arguments: ``InjectedState``, ``InjectedStore``, ``ToolRuntime``) starts at once, with the
   tool-call input ``ToolNode`` would pass (``tool.invoke({... "type": "tool_call"}, config)``):
   an asyncio task when the model runs on an event loop (``ainvoke``), a worker thread
   otherwise;
4. when ``ToolNode`` executes that call (same id, name, arguments and tool object), the tool it
   invokes is a ``PrestartedTool`` that hands back the running call's outcome (its result, or
   its exception re-raised) instead of invoking the tool again. Everything around it
   (middleware ``wrap_tool_call``, ``handle_tool_errors``, ``Command`` handling, message order
   and ids) is ``ToolNode``'s own code, unchanged.

Equivalence and its limits: a call whose arguments never close during the stream (malformed or
truncated JSON) is not started; ``ToolNode`` runs it after the stream, as without dispatch.
A call started early whose final message disagrees (other id, name or arguments) or that no
``ToolNode`` claims is cancelled when its model call or program ends. Cancelling the run
cancels the tool tasks (a sync tool already running in a thread finishes, as it would in
``ToolNode``). A tool that raises ``GraphInterrupt`` (``interrupt()``) during its early run is
run again by ``ToolNode``, so interrupts behave as without dispatch. The tool's LangChain run is
a child of the model's node run instead of the tool node's run (tracing shows it there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langgraph.errors import GraphBubbleUp

logger = logging.getLogger(__name__)

STREAMING_DISPATCH_ENV = "THUNDER_STREAMING_DISPATCH"
_OFF = {"0", "false", "off", "no"}


def streaming_dispatch_enabled(flag: bool | None = None) -> bool:
    """The ``streaming_dispatch`` flag, or ``THUNDER_STREAMING_DISPATCH`` (default on)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(STREAMING_DISPATCH_ENV, "1").strip().lower() not in _OFF


def _properties(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        return set((schema.get("parameters") or schema).get("properties", {}))
    as_json = getattr(schema, "model_json_schema", None) or schema.schema  # pydantic v2 / v1
    return set(as_json().get("properties", {}))


def eligible(tool: Any) -> bool:
    """A tool can start early when the model's arguments are all it takes (nothing injected)."""
    if not isinstance(tool, BaseTool):
        return False
    try:
        full = _properties(tool.get_input_schema())
        visible = _properties(tool.tool_call_schema)
    except Exception:
        return False
    # ToolNode also injects a parameter named ``runtime`` whatever its annotation.
    return full <= visible and "runtime" not in full


# -- assembling the stream ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClosedCall:
    index: int
    id: str
    name: str
    args: dict[str, Any]


@dataclass(slots=True)
class _Partial:
    id: str = ""
    name: str = ""
    args: str = ""
    parsed: dict[str, Any] | None = None
    closed: bool = False


class ToolCallAssembler:
    """Follows ``AIMessageChunk.tool_call_chunks`` and says which calls have closed."""

    __slots__ = ("_calls", "_pending", "_seq")

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}
        self._pending: dict[int, int] = {}  # index -> chunk number at which it parsed
        self._seq = 0

    @property
    def waiting(self) -> bool:
        return bool(self._pending)

    def feed(self, chunks: Iterable[Mapping[str, Any]]) -> list[ClosedCall]:
        self._seq += 1
        extended: set[int] = set()
        for chunk in chunks:
            index = chunk.get("index")
            if not isinstance(index, int):
                continue  # calls without an index are merged by LangChain, not followed here
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = _Partial()
            if chunk.get("id") and not call.id:
                call.id = str(chunk["id"])
            if chunk.get("name"):
                call.name += str(chunk["name"])
            fragment = chunk.get("args") or ""
            if not fragment:
                continue
            call.args += fragment
            extended.add(index)  # even whitespace: the next chunk decides
            if not fragment.strip():
                continue
            self._pending.pop(index, None)
            call.parsed = None
            if not call.closed and call.args.rstrip().endswith("}"):
                try:
                    value = json.loads(call.args, strict=False)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    call.parsed = value
                    self._pending[index] = self._seq
        closed: list[ClosedCall] = []
        for index, seq in list(self._pending.items()):
            if seq < self._seq and index not in extended:
                del self._pending[index]
                call = self._calls[index]
                call.closed = True
                if call.id and call.name and call.parsed is not None:
                    closed.append(ClosedCall(index, call.id, call.name, call.parsed))
        return closed


# -- running early -----------------------------------------------------------------------------


@dataclass(eq=False)
class EarlyCall:
    """A tool call started during the model stream."""

    call: ClosedCall
    tool: BaseTool
    task: asyncio.Task[Any] | None = None
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    loop: asyncio.AbstractEventLoop | None = None

    def cancel(self) -> None:
        if self.task is not None and self.loop is not None and not self.loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop:
                self.task.cancel()
            else:
                self.loop.call_soon_threadsafe(self.task.cancel)
        else:
            self.future.cancel()

    def result(self) -> Any:
        """Block until the early run ends: its result, or its exception raised."""
        return self.future.result()

    async def aresult(self) -> Any:
        if self.task is not None and asyncio.get_running_loop() is self.loop:
            return await self.task  # cancelling the waiter cancels the tool, as in ToolNode
        return await asyncio.wrap_future(self.future)


def _mirror(task: asyncio.Task[Any], future: concurrent.futures.Future[Any]) -> None:
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


def _retrieve(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an unclaimed failure is not "never retrieved"


class PrestartedTool:
    """Stands in for a tool inside ``ToolNode``: its first invocation returns the early run."""

    def __init__(self, tool: BaseTool, early: EarlyCall) -> None:
        self._tool = tool
        self._early: EarlyCall | None = early

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tool, name)

    def _take(self) -> EarlyCall | None:
        early, self._early = self._early, None
        return early

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        early = self._take()
        if early is not None:
            try:
                return early.result()
            except (GraphBubbleUp, concurrent.futures.CancelledError):
                pass  # interrupted or cancelled early: run it where ToolNode runs it
        return self._tool.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        early = self._take()
        if early is not None:
            try:
                return await early.aresult()
            except GraphBubbleUp:
                pass
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the run itself is being cancelled
        return await self._tool.ainvoke(input, config, **kwargs)


@dataclass(slots=True)
class _Stream:
    assembler: ToolCallAssembler
    config: Any
    loop: asyncio.AbstractEventLoop | None
    tools: Mapping[str, BaseTool]
    started: list[str] = field(default_factory=list)


class StreamingToolDispatcher(BaseCallbackHandler, _StreamingCallbackHandler[Any]):
    """Starts tool calls from a model's stream; ``claim()`` hands them to ``ToolNode``.

    ``tools_by_node`` maps the graph node that calls the model to the tools its ``ToolNode``
    would run (``None`` for the node name means: whichever model this handler is attached to,
    which is how ``ThunderMiddleware`` attaches it to one model call).
    """

    run_inline = True
    raise_error = False
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(
        self, tools_by_node: Mapping[str | None, Mapping[str, BaseTool]], *,
        executor: concurrent.futures.Executor | None = None, max_workers: int = 8,
        on_start: Any = None,
    ) -> None:
        self.tools_by_node = dict(tools_by_node)
        self.max_workers = max_workers
        self.on_start = on_start
        self._shared_executor = executor
        self._lock = threading.Lock()
        self._streams: dict[UUID, _Stream] = {}
        self._calls: dict[str, EarlyCall] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    # -- the streaming-handler protocol (pass-through) ---------------------------------------

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output

    def tap_output_aiter(self, run_id: UUID, output: Any) -> Any:
        return output

    # -- model runs ----------------------------------------------------------------------------

    def _tools_for(self, metadata: Mapping[str, Any] | None) -> Mapping[str, BaseTool] | None:
        if None in self.tools_by_node:
            return self.tools_by_node[None]
        metadata = metadata or {}
        if "|" in str(metadata.get("langgraph_checkpoint_ns", "")):
            return None  # a model inside a subgraph or a tool: not this graph's tool step
        return self.tools_by_node.get(metadata.get("langgraph_node"))

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
        metadata: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        tools = self._tools_for(metadata)
        if self._closed or not tools:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        stream = _Stream(ToolCallAssembler(), var_child_runnable_config.get(), loop, tools)
        with self._lock:
            self._streams[run_id] = stream

    def on_llm_new_token(
        self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any
    ) -> None:
        stream = self._streams.get(run_id)
        if stream is None:
            return
        fragments = getattr(getattr(chunk, "message", None), "tool_call_chunks", None)
        if not fragments and not stream.assembler.waiting:
            return
        for call in stream.assembler.feed(fragments or ()):
            self._start(stream, call)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            stream = self._streams.pop(run_id, None)
        if stream is None or not stream.started:
            return
        final: dict[str, tuple[str, Any]] = {}
        for generations in getattr(response, "generations", None) or []:
            for generation in generations:
                for call in getattr(getattr(generation, "message", None), "tool_calls", None) or []:
                    final[str(call.get("id"))] = (call.get("name"), call.get("args"))
        for call_id in stream.started:
            early = self._calls.get(call_id)
            if early is not None and final.get(call_id) != (early.call.name, early.call.args):
                self._drop(call_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            stream = self._streams.pop(run_id, None)
        for call_id in stream.started if stream else ():
            self._drop(call_id)

    # -- tool calls ----------------------------------------------------------------------------

    def _start(self, stream: _Stream, call: ClosedCall) -> None:
        tool = stream.tools.get(call.name)
        if tool is None or self._closed:
            return
        with self._lock:
            if call.id in self._calls:
                return  # a repeated id is not followed: ToolNode runs it
            early = self._calls[call.id] = EarlyCall(call, tool)
        tool_input = {"name": call.name, "args": call.args, "id": call.id, "type": "tool_call"}
        config = stream.config
        early.future.add_done_callback(_retrieve)
        if stream.loop is not None:
            early.loop = stream.loop
            early.task = stream.loop.create_task(tool.ainvoke(tool_input, config))
            early.task.add_done_callback(lambda task: _mirror(task, early.future))
        else:
            executor = self._pool()
            context = contextvars.copy_context()
            inner = executor.submit(context.run, tool.invoke, tool_input, config)
            inner.add_done_callback(lambda done: _copy(done, early.future))
        stream.started.append(call.id)
        if self.on_start is not None:
            try:
                self.on_start(call.id, call.name)
            except Exception:
                logger.exception("streaming dispatch: on_start hook failed")

    def _pool(self) -> concurrent.futures.Executor:
        if self._shared_executor is not None:
            return self._shared_executor
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="thunder-tool"
                )
            return self._executor

    def _drop(self, call_id: str) -> None:
        with self._lock:
            early = self._calls.pop(call_id, None)
        if early is not None:
            early.cancel()

    def claim(self, tool_call: Mapping[str, Any], tool: Any) -> EarlyCall | None:
        """The early run of this exact call (id, name, arguments, tool object), taken once."""
        call_id = tool_call.get("id")
        if not call_id or not self._calls:
            return None
        with self._lock:
            early = self._calls.get(str(call_id))
            if early is None or early.tool is not tool or early.call.name != tool_call.get(
                "name"
            ) or early.call.args != tool_call.get("args"):
                return None
            del self._calls[str(call_id)]
        return early

    @property
    def running(self) -> Sequence[str]:
        """Ids of calls started early and not yet claimed."""
        with self._lock:
            return list(self._calls)

    def close(self) -> None:
        """The program run ended: cancel what no ``ToolNode`` claimed."""
        self._closed = True
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            executor, self._executor = self._executor, None
        for early in calls:
            early.cancel()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _copy(done: concurrent.futures.Future[Any], target: concurrent.futures.Future[Any]) -> None:
    if target.done():
        return
    if done.cancelled():
        target.cancel()
    elif (error := done.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(done.result())


def find_dispatcher(config: Any) -> StreamingToolDispatcher | None:
    callbacks = (config or {}).get("callbacks")
    handlers = getattr(callbacks, "handlers", None)
    if handlers is None and isinstance(callbacks, list):
        handlers = callbacks
    for handler in handlers or ():
        if isinstance(handler, StreamingToolDispatcher):
            return handler
    return None


def prestarted(request: Any, dispatcher: StreamingToolDispatcher | None) -> Any:
    """``request`` with its tool replaced by the early run, when there is one to claim."""
    if dispatcher is None or request.tool is None:
        return request
    early = dispatcher.claim(request.tool_call, request.tool)
    if early is None:
        return request
    return request.override(tool=PrestartedTool(request.tool, early))
