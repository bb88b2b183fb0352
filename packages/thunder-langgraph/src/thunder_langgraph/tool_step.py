"""Where streaming dispatch meets a compiled graph: which model nodes feed which ``ToolNode``.

``plan(graph)`` reads the graph's builder (``StateGraph.nodes``, ``edges``, ``branches``) and
returns, for each node that hands its output straight to a ``ToolNode`` (a plain edge, or a
conditional edge that may go there, as ``tools_condition`` does), the tools that ``ToolNode``
runs and that can start early (``dispatch.eligible``). Nodes are left out when something may
stand between the model and the tools: ``interrupt_before`` the ``ToolNode``,
``interrupt_after`` the model node, or any other node in between (a human-review node,
``create_agent``'s ``after_model`` middleware such as ``HumanInTheLoopMiddleware``): there a
tool call may be edited or refused after the model, so it must not run before.

``install()`` hooks ``ToolNode``'s single-call execution (``_execute_tool_sync`` /
``_execute_tool_async``, the innermost step, below any ``wrap_tool_call`` middleware) so a call
that the run's dispatcher started early is claimed there (``dispatch.prestarted``). Runs
without a dispatcher pay one scan of their callback handlers.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.tools import BaseTool

from thunder_langgraph import stream_usage
from thunder_langgraph.dispatch import eligible, find_dispatcher, prestarted

logger = logging.getLogger(__name__)

_installed: list[bool] = []


def _tool_node_class() -> Any:
    from langgraph.prebuilt import ToolNode

    return ToolNode


def _reaches(builder: Any, source: str, target: str) -> bool:
    if (source, target) in getattr(builder, "edges", set()):
        return True
    for branch in (getattr(builder, "branches", {}) or {}).get(source, {}).values():
        ends = getattr(branch, "ends", None)
        if ends is None or target in ends.values():
            return True
    return False


def plan(graph: Any) -> dict[str | None, dict[str, BaseTool]]:
    """Model node name → the early-startable tools of the ``ToolNode`` it feeds."""
    builder = getattr(graph, "builder", None)
    nodes = getattr(builder, "nodes", None)
    if not isinstance(nodes, dict):
        return {}
    before = getattr(graph, "interrupt_before_nodes", ()) or ()
    after = getattr(graph, "interrupt_after_nodes", ()) or ()
    if before == "*" or after == "*":
        return {}
    tool_node = _tool_node_class()
    result: dict[str | None, dict[str, BaseTool]] = {}
    for target, spec in nodes.items():
        runnable = getattr(spec, "runnable", None)
        if not isinstance(runnable, tool_node) or target in before:
            continue
        tools = {name: tool for name, tool in runnable.tools_by_name.items() if eligible(tool)}
        if not tools:
            continue
        for source in nodes:
            if source == target or source in after or not _reaches(builder, source, target):
                continue
            table = result.setdefault(source, {})
            for name, tool in tools.items():
                if table.get(name, tool) is not tool:
                    logger.info("streaming dispatch: two tools named %r after node %r; "
                                "neither starts early", name, source)
                    table[name] = None  # type: ignore[assignment]
                else:
                    table[name] = tool
    return {node: {n: t for n, t in table.items() if t is not None}
            for node, table in result.items()}


def install() -> bool:
    """Hook ``ToolNode`` (idempotent). False when this LangGraph has no such step to hook."""
    stream_usage.install()  # a dispatched stream reports usage as the unstreamed call would
    if _installed:
        return True
    tool_node = _tool_node_class()
    sync_step = getattr(tool_node, "_execute_tool_sync", None)
    async_step = getattr(tool_node, "_execute_tool_async", None)
    if sync_step is None or async_step is None:
        logger.warning("streaming dispatch: this LangGraph's ToolNode has no per-call step to "
                       "hook; tool calls run after the model response as before")
        return False

    def _execute_tool_sync(self: Any, request: Any, input_type: Any, config: Any) -> Any:
        return sync_step(self, prestarted(request, find_dispatcher(config)), input_type, config)

    async def _execute_tool_async(self: Any, request: Any, input_type: Any, config: Any) -> Any:
        request = prestarted(request, find_dispatcher(config))
        return await async_step(self, request, input_type, config)

    tool_node._execute_tool_sync = _execute_tool_sync
    tool_node._execute_tool_async = _execute_tool_async
    _installed.append(True)
    return True
