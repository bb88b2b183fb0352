"""``wrap(graph)``: every top-level invocation of a compiled graph becomes a Thunder program.

What one invocation does (``invoke``, ``ainvoke``, ``stream``, ``astream``, ``astream_events``,
and each input of ``batch`` / ``abatch``):

1. chooses the program id (see ``Identity``) and sends *program start* (framework, priority,
   tags from ``wrap(..., **program_metadata)``);
2. runs the graph with the program id in the root config's metadata and a tool-events handler
   in its callbacks. Every child run inherits both, so every LLM HTTP request made inside (any
   ``ChatOpenAI`` or other httpx-based OpenAI-compatible client pointed at the scheduler)
   carries ``X-Thunder-Program-Id`` through ``thunder_core``'s httpx hook, and every tool run
   sends tool start / tool end with its name and tool-call id. Subgraphs, parallel tool calls
   and ``Send`` fan-out are child runs of the same root, so they stay in the program;
3. sends *program end* in every case: ``ok`` on success, ``ok`` with reason ``interrupted`` when
   the graph stopped at ``interrupt()``, ``error`` when it raised, ``cancelled`` when the task
   was cancelled or a stream was closed before its end.

Lifecycle events never block the graph: they are queued and sent by ``thunder_core``'s
``LifecycleEmitter`` thread with a timeout; if the scheduler is unreachable the graph still
runs (its model calls still work when they reach the model) and one warning per program says
which event was lost. The scheduler's lease ends a program whose end event was lost.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any

from langchain_core.callbacks import BaseCallbackManager

from thunder_core import InvalidProgramId, LifecycleEmitter, ProgramEndStatus
from thunder_core.contract import validate_program_id
from thunder_langgraph import resolver, stream_usage, tool_step
from thunder_langgraph.callbacks import ToolEventsHandler, _end_status
from thunder_langgraph.dispatch import StreamingToolDispatcher, streaming_dispatch_enabled
from thunder_langgraph.emitters import emitter_for
from thunder_langgraph.hints import CacheHintsHandler

CONFIGURABLE_PROGRAM_KEY = "thunder_program_id"


def _thread_program_id(raw: str) -> str:
    """A thread id as a program id; ids that are not valid program ids are hashed."""
    try:
        return validate_program_id(raw)
    except InvalidProgramId:
        return "thread-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class Identity(StrEnum):
    """How a wrapped graph names its programs."""

    INVOCATION = "invocation"
    """A fresh program per top-level invocation (default)."""
    THREAD = "thread"
    """One program per ``configurable.thread_id``: a conversation is one program across
    invocations, ended by ``end_thread()`` or by the scheduler's lease."""


def _ungated(kwargs: dict[str, Any]) -> bool:
    """A run that stops before or after nodes may stop between the model and its tools."""
    return not (kwargs.get("interrupt_before") or kwargs.get("interrupt_after"))


def _interrupted(value: Any) -> bool:
    if isinstance(value, dict):
        return "__interrupt__" in value
    if isinstance(value, tuple) and value:  # (namespace, mode, chunk) / (mode, chunk) forms
        return _interrupted(value[-1])
    return False


class _Invocation:
    """One program run of the wrapped graph: its id, config and end bookkeeping."""

    def __init__(
        self, owner: ThunderGraph, config: dict[str, Any] | None, *, dispatch: bool = True
    ) -> None:
        self.owner = owner
        config = dict(config or {})
        configurable = dict(config.get("configurable") or {})
        explicit = configurable.get(CONFIGURABLE_PROGRAM_KEY) or owner.program_id
        self.ends_program = True
        if explicit:
            self.program_id = validate_program_id(str(explicit))
        elif owner.identity is Identity.THREAD:
            thread_id = configurable.get("thread_id")
            if thread_id is None:
                raise ValueError(
                    "wrap(identity='thread') needs config={'configurable': {'thread_id': ...}}"
                )
            self.program_id = _thread_program_id(f"{owner.thread_prefix}{thread_id}")
            self.ends_program = False
        else:
            self.program_id = f"lg-{uuid.uuid4()}"
        metadata = dict(config.get("metadata") or {})
        metadata[resolver.PROGRAM_METADATA_KEY] = self.program_id
        config["metadata"] = metadata
        handlers: list[Any] = [ToolEventsHandler(owner.emitter, self.program_id),
                               CacheHintsHandler(owner.emitter, self.program_id)]
        self.dispatcher: StreamingToolDispatcher | None = None
        if dispatch and owner.dispatch_plan:
            stream_usage.install()  # once langchain_openai is imported (no-op after)
            self.dispatcher = StreamingToolDispatcher(owner.dispatch_plan,
                                                      executor=owner.tool_pool)
            handlers.append(self.dispatcher)
        callbacks = config.get("callbacks")
        if callbacks is None:
            config["callbacks"] = handlers
        elif isinstance(callbacks, BaseCallbackManager):
            manager = callbacks.copy()
            for handler in handlers:
                manager.add_handler(handler, inherit=True)
            config["callbacks"] = manager
        else:
            config["callbacks"] = [*callbacks, *handlers]
        self.config = config
        self.interrupted = False
        self._ended = False
        owner._start(self.program_id, thread=not self.ends_program)

    def saw(self, value: Any) -> Any:
        if _interrupted(value):
            self.interrupted = True
        return value

    def _close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()

    def end_ok(self) -> None:
        self._close()
        if self._ended or not self.ends_program:
            return
        self._ended = True
        reason = "interrupted" if self.interrupted else None
        self.owner.emitter.program_ended(self.program_id, ProgramEndStatus.OK, reason)

    def end_error(self, error: BaseException) -> None:
        self._close()
        if self._ended or not self.ends_program:
            return
        self._ended = True
        self.owner.emitter.program_ended(
            self.program_id, _end_status(error), repr(error)[:500]
        )

    def end_closed(self) -> None:
        self._close()
        if self._ended or not self.ends_program:
            return
        self._ended = True
        self.owner.emitter.program_ended(
            self.program_id, ProgramEndStatus.CANCELLED, "stream closed before its end"
        )


class ThunderGraph:
    """A compiled graph whose top-level runs are Thunder programs. Other attributes delegate."""

    def __init__(
        self,
        graph: Any,
        emitter: LifecycleEmitter,
        *,
        identity: Identity = Identity.INVOCATION,
        program_id: str | None = None,
        thread_prefix: str = "",
        program_metadata: dict[str, Any] | None = None,
        streaming_dispatch: bool | None = None,
        dispatch_plan: dict[str | None, dict[str, Any]] | None = None,
        tool_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self._graph = graph
        self.streaming_dispatch = streaming_dispatch_enabled(streaming_dispatch)
        self.dispatch_plan: dict[str | None, dict[str, Any]] = {}
        if self.streaming_dispatch and tool_step.install():
            self.dispatch_plan = tool_step.plan(graph) if dispatch_plan is None else dispatch_plan
        # sync tools started from a stream run here (threads start on first use)
        self.tool_pool = tool_pool or ThreadPoolExecutor(8, thread_name_prefix="thunder-tool")
        self.emitter = emitter
        self.identity = identity
        self.program_id = program_id
        self.thread_prefix = thread_prefix
        self.program_metadata = dict(program_metadata or {})
        self.program_metadata.setdefault("framework", "langgraph")
        self._started_threads: set[str] = set()
        resolver.install()

    # -- lifecycle --------------------------------------------------------------------------

    def _start(self, program_id: str, *, thread: bool) -> None:
        if thread:
            if program_id in self._started_threads:
                return
            self._started_threads.add(program_id)
        self.emitter.program_started(program_id, **self.program_metadata)

    def end_thread(
        self, thread_id: str, status: ProgramEndStatus | str = ProgramEndStatus.OK,
        reason: str | None = None,
    ) -> None:
        """End the program of a conversation (``identity='thread'``)."""
        program_id = _thread_program_id(f"{self.thread_prefix}{thread_id}")
        self._started_threads.discard(program_id)
        self.emitter.program_ended(program_id, status, reason)

    def flush(self, timeout_s: float | None = 5.0) -> bool:
        """Wait until the lifecycle events sent so far have been delivered (tests, shutdown)."""
        return self.emitter.flush(timeout_s)

    # -- runs -------------------------------------------------------------------------------

    def invoke(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        run = _Invocation(self, config, dispatch=_ungated(kwargs))
        try:
            result = run.saw(self._graph.invoke(input, run.config, **kwargs))
        except BaseException as exc:
            run.end_error(exc)
            raise
        run.end_ok()
        return result

    async def ainvoke(
        self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        run = _Invocation(self, config, dispatch=_ungated(kwargs))
        try:
            result = run.saw(await self._graph.ainvoke(input, run.config, **kwargs))
        except BaseException as exc:
            run.end_error(exc)
            raise
        run.end_ok()
        return result

    def stream(
        self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        run = _Invocation(self, config, dispatch=_ungated(kwargs))
        finished = False
        try:
            for chunk in self._graph.stream(input, run.config, **kwargs):
                yield run.saw(chunk)
            finished = True
        except GeneratorExit:
            run.end_closed()
            raise
        except BaseException as exc:
            run.end_error(exc)
            raise
        finally:
            if finished:
                run.end_ok()

    async def astream(
        self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        run = _Invocation(self, config, dispatch=_ungated(kwargs))
        finished = False
        try:
            async for chunk in self._graph.astream(input, run.config, **kwargs):
                yield run.saw(chunk)
            finished = True
        except GeneratorExit:
            run.end_closed()
            raise
        except BaseException as exc:
            run.end_error(exc)
            raise
        finally:
            if finished:
                run.end_ok()

    async def astream_events(
        self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        run = _Invocation(self, config, dispatch=_ungated(kwargs))
        finished = False
        try:
            async for event in self._graph.astream_events(input, run.config, **kwargs):
                if event.get("event") == "on_chain_stream" and not event.get("parent_ids"):
                    run.saw((event.get("data") or {}).get("chunk"))
                yield event
            finished = True
        except GeneratorExit:
            run.end_closed()
            raise
        except BaseException as exc:
            run.end_error(exc)
            raise
        finally:
            if finished:
                run.end_ok()

    def batch(
        self, inputs: Sequence[Any], config: dict[str, Any] | Sequence[dict[str, Any]] | None
        = None, *, return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:
        configs = self._configs(config, len(inputs))
        runs = [_Invocation(self, c, dispatch=_ungated(kwargs)) for c in configs]
        results = self._graph.batch(
            list(inputs), [r.config for r in runs], return_exceptions=True, **kwargs
        )
        return self._settle(runs, results, return_exceptions)

    async def abatch(
        self, inputs: Sequence[Any], config: dict[str, Any] | Sequence[dict[str, Any]] | None
        = None, *, return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:
        configs = self._configs(config, len(inputs))
        runs = [_Invocation(self, c, dispatch=_ungated(kwargs)) for c in configs]
        try:
            results = await self._graph.abatch(
                list(inputs), [r.config for r in runs], return_exceptions=True, **kwargs
            )
        except BaseException as exc:
            for run in runs:
                run.end_error(exc)
            raise
        return self._settle(runs, results, return_exceptions)

    @staticmethod
    def _configs(
        config: dict[str, Any] | Sequence[dict[str, Any]] | None, n: int
    ) -> list[dict[str, Any] | None]:
        if config is None or isinstance(config, dict):
            return [config] * n
        if len(config) != n:
            raise ValueError(f"batch got {n} inputs but {len(config)} configs")
        return list(config)

    @staticmethod
    def _settle(runs: list[_Invocation], results: list[Any], return_exceptions: bool) -> list[Any]:
        first_error: BaseException | None = None
        for run, result in zip(runs, results, strict=True):
            if isinstance(result, BaseException):
                run.end_error(result)
                first_error = first_error or result
            else:
                run.saw(result)
                run.end_ok()
        if first_error is not None and not return_exceptions:
            raise first_error
        return results

    def with_config(self, config: dict[str, Any] | None = None, **kwargs: Any) -> ThunderGraph:
        return ThunderGraph(
            self._graph.with_config(config, **kwargs), self.emitter, identity=self.identity,
            program_id=self.program_id, thread_prefix=self.thread_prefix,
            program_metadata=self.program_metadata, streaming_dispatch=self.streaming_dispatch,
            dispatch_plan=self.dispatch_plan, tool_pool=self.tool_pool,
        )

    @property
    def wrapped(self) -> Any:
        """The original compiled graph."""
        return self._graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def __repr__(self) -> str:
        return f"ThunderGraph({self._graph!r}, identity={self.identity.value!r})"


def wrap(
    graph: Any,
    scheduler_url: str | None = None,
    *,
    identity: Identity | str = Identity.INVOCATION,
    program_id: str | None = None,
    thread_prefix: str = "",
    emitter: LifecycleEmitter | None = None,
    streaming_dispatch: bool | None = None,
    **program_metadata: Any,
) -> ThunderGraph:
    """Make every top-level run of ``graph`` a Thunder program.

    ``scheduler_url`` defaults to ``THUNDER_SCHEDULER_URL``. ``identity``: ``"invocation"``
    (a fresh program per run, default) or ``"thread"`` (one program per ``thread_id``).
    ``program_id`` fixes the id for every run; a run can also pass its own with
    ``config={"configurable": {"thunder_program_id": "..."}}``. ``program_metadata`` goes into
    program start: ``priority=``, ``tags=``, ``framework=``, ``lease_s=``.
    ``streaming_dispatch`` (default on, or ``THUNDER_STREAMING_DISPATCH``): start each tool call
    of a ``ToolNode`` as soon as the model has streamed its arguments (``dispatch``).
    """
    if program_id is not None:
        validate_program_id(program_id)
    return ThunderGraph(
        graph, emitter or emitter_for(scheduler_url), identity=Identity(identity),
        program_id=program_id, thread_prefix=thread_prefix, program_metadata=program_metadata,
        streaming_dispatch=streaming_dispatch,
    )
