"""thunder-langgraph: turn any LangGraph graph or LangChain agent into Thunder programs.

    from thunder_langgraph import wrap
    app = wrap(graph.compile(), scheduler_url="http://localhost:8000")

See ``wrap`` (any compiled graph), ``ThunderMiddleware`` (``create_agent``) and
``thunder_langgraph.autoload`` (the zero-code toggle with ``THUNDER_SCHEDULER_URL``).
"""

from thunder_langgraph.middleware import ThunderMiddleware
from thunder_langgraph.wrap import Identity, ThunderGraph, wrap

__version__ = "0.1.0"
__all__ = ["Identity", "ThunderGraph", "ThunderMiddleware", "wrap"]
