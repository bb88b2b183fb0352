"""thunder-openhands: one toggle puts OpenHands agents and their sandboxes under the scheduler.

    import thunder_openhands
    thunder_openhands.enable("http://127.0.0.1:8300")   # or: export THUNDER_SCHEDULER_URL=...

Then every ``Conversation`` is a program (id = conversation id) whose LLM requests go through
the scheduler and whose tool calls and end are reported to it. ``ThunderWorkspace.acquire(spec)``
takes the conversation's sandbox from the scheduler's tool manager (warm pool) instead of a cold
container. The app-server sandbox service is ``thunder_openhands.app_server`` (needs openhands-ai).
"""

from thunder_core.contract import CONTRACT_VERSION as _CORE_CONTRACT_VERSION
from thunder_openhands.lifecycle import ConversationTracker
from thunder_openhands.routing import HookUnavailable
from thunder_openhands.toggle import disable, enable, is_enabled, scheduler_url, tracker_of
from thunder_openhands.workspace import ThunderWorkspace

__version__ = "0.1.0"
CONTRACT_VERSION = "1"
"""The wire contract (``thunder_core.contract``) this adapter was written against."""
if _CORE_CONTRACT_VERSION != CONTRACT_VERSION:
    raise ImportError(
        f"thunder-openhands {__version__} speaks Thunder contract {CONTRACT_VERSION} but the "
        f"installed thunder-core speaks {_CORE_CONTRACT_VERSION}: install matching versions"
    )

__all__ = [
    "CONTRACT_VERSION",
    "ConversationTracker",
    "HookUnavailable",
    "ThunderWorkspace",
    "disable",
    "enable",
    "is_enabled",
    "scheduler_url",
    "tracker_of",
]
