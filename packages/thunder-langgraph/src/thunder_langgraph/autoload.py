"""The zero-code toggle: with ``THUNDER_SCHEDULER_URL`` set, every LangChain run is a program.

Importing this module registers ``AutoProgramHandler`` with LangChain's configure hook
(``langchain_core.tracers.context.register_configure_hook``), keyed on the environment variable
``THUNDER_SCHEDULER_URL``: whenever it is set, LangChain adds the handler to every run. The
package installs a ``thunder_langgraph.pth`` file that imports this module at interpreter start
only when the variable is set, so an unmodified app needs no import.

What it covers without ``wrap``:
* every root chain run (a compiled graph, ``create_agent``'s agent, any LCEL chain invoked at
  top level) becomes one program, id = the root run id, program end ok / error / cancelled,
  ``ok`` with reason ``interrupted`` when the graph stopped at ``interrupt()``;
* tool start / tool end for every tool run inside it, with the tool-call id;
* the program id header on every httpx-based HTTP request made inside those runs.

What it does not cover:
* a model called directly at top level (``llm.invoke(...)`` outside any chain) is not a
  program: its request passes through untagged;
* one program per conversation (``thread_id``) or ids of your own: use ``wrap(...)``;
* program metadata (priority, tags): use ``wrap(...)`` or ``ThunderMiddleware(...)``;
* HTTP clients that are not httpx-based (``requests``, aiohttp) are not tagged.
"""

from __future__ import annotations

import contextvars

from langchain_core.tracers.context import register_configure_hook

from thunder_core.client import SCHEDULER_URL_ENV
from thunder_langgraph.callbacks import AutoProgramHandler

_handler_var: contextvars.ContextVar[AutoProgramHandler | None] = contextvars.ContextVar(
    "thunder_auto_program_handler", default=None
)
_registered: list[bool] = []


def enable() -> None:
    """Register the configure hook (idempotent). Active only while the env var is set."""
    if _registered:
        return
    register_configure_hook(
        _handler_var, inheritable=True, handle_class=AutoProgramHandler, env_var=SCHEDULER_URL_ENV
    )
    _registered.append(True)


enable()
