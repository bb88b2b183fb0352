"""thunder-langgraph: turn any LangGraph graph or LangChain agent into Thunder programs.

    from thunder_langgraph import wrap
    app = wrap(graph.compile(), scheduler_url="http://localhost:8300")

See ``wrap`` (any compiled graph), ``ThunderMiddleware`` (``create_agent``) and
``thunder_langgraph.autoload`` (the zero-code toggle with ``THUNDER_SCHEDULER_URL``).

``import thunder_langgraph`` loads only what ``wrap`` needs (``langchain_core``); the
``langchain`` package (agents) is imported the first time ``ThunderMiddleware`` is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from thunder_core.contract import CONTRACT_VERSION as _CORE_CONTRACT_VERSION
from thunder_langgraph.wrap import Identity, ThunderGraph, wrap

if TYPE_CHECKING:
    from thunder_langgraph.middleware import ThunderMiddleware

__version__ = "0.1.0"
CONTRACT_VERSION = "1"
"""The wire contract (``thunder_core.contract``) this adapter was written against."""
if _CORE_CONTRACT_VERSION != CONTRACT_VERSION:
    raise ImportError(
        f"thunder-langgraph {__version__} speaks Thunder contract {CONTRACT_VERSION} but the "
        f"installed thunder-core speaks {_CORE_CONTRACT_VERSION}: install matching versions"
    )
__all__ = ["CONTRACT_VERSION", "Identity", "ThunderGraph", "ThunderMiddleware", "wrap"]

_LAZY = {"ThunderMiddleware": "thunder_langgraph.middleware"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'thunder_langgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
