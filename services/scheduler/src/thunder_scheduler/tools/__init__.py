"""The tool resource manager: runtime specs, warm pools, lifecycle GC and accounting.

``ToolManager`` (manager.py) is built from ``ToolManagerSettings`` (settings.py) and a
``RuntimeBackend`` (base.py; docker.py, local_process.py), made by
``registry.make_backend``; ``api.create_tools_router`` serves it over HTTP.
"""

from thunder_scheduler.tools.base import RuntimeBackend, ToolError
from thunder_scheduler.tools.manager import ToolManager
from thunder_scheduler.tools.settings import ToolManagerSettings

__all__ = ["RuntimeBackend", "ToolError", "ToolManager", "ToolManagerSettings"]
