"""thunder-core: the Thunder wire contract and the lifecycle API clients.

Everything an adapter needs is importable from here; ``__all__`` is the public API (a test
checks it).
"""

from thunder_core.client import (
    ADMIN_KEY_ENV,
    SCHEDULER_URL_ENV,
    AsyncThunderClient,
    ThunderAPIError,
    ThunderClient,
    ThunderError,
    ThunderUnavailable,
    scheduler_url_from_env,
)
from thunder_core.context import (
    add_program_resolver,
    current_program_id,
    install_httpx_hook,
    program,
    program_headers,
)
from thunder_core.contract import (
    CONTRACT_VERSION,
    LITELLM_SESSION_HEADER,
    PROGRAM_ID_FIELD,
    PROGRAM_ID_HEADER,
    Framework,
    InvalidProgramId,
    Paths,
    ProgramEnd,
    ProgramEndStatus,
    ProgramPhase,
    ProgramStart,
    ProgramStatus,
    ProgramView,
    ToolEnd,
    ToolEndStatus,
    ToolStart,
    program_id_from,
    strip_identity,
)
from thunder_core.emitter import LifecycleEmitter

__version__ = "0.1.0"

__all__ = [
    "ADMIN_KEY_ENV",
    "CONTRACT_VERSION",
    "LITELLM_SESSION_HEADER",
    "PROGRAM_ID_FIELD",
    "PROGRAM_ID_HEADER",
    "SCHEDULER_URL_ENV",
    "AsyncThunderClient",
    "Framework",
    "InvalidProgramId",
    "LifecycleEmitter",
    "Paths",
    "ProgramEnd",
    "ProgramEndStatus",
    "ProgramPhase",
    "ProgramStart",
    "ProgramStatus",
    "ProgramView",
    "ThunderAPIError",
    "ThunderClient",
    "ThunderError",
    "ThunderUnavailable",
    "ToolEnd",
    "ToolEndStatus",
    "ToolStart",
    "add_program_resolver",
    "current_program_id",
    "install_httpx_hook",
    "program",
    "program_headers",
    "program_id_from",
    "scheduler_url_from_env",
    "strip_identity",
]
