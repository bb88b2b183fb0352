"""The Thunder wire contract: every name that crosses a process boundary, defined once.

Adapters (LangGraph, OpenHands, plain ``openai`` code), the scheduler service and the
simulator import these names instead of spelling strings themselves.

Program identity, in order of precedence:

1. header ``X-Thunder-Program-Id`` (ours);
2. body field ``program_id`` at the top level of the JSON body, or inside ``extra_body``
   (ThunderAgent's convention, so its users switch without code changes);
3. the session ids ThunderAgent's proxy also reads (``app.py`` ``get_program_id``), in its
   order: header ``x-dynamo-session-id`` (NVIDIA Dynamo's agent header), header
   ``X-Session-ID`` (what SkyRL routes by), body ``nvext.agent_context.session_id``;
4. header ``x-litellm-session-id`` (what OpenHands and litellm already send).

A request that carries none of them is passed through untouched: it does not join a shared
"default" program (ThunderAgent's behaviour, which merged unrelated agents into one).

Lifecycle events are pydantic models; the HTTP paths that take them are in ``Paths``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, MutableMapping, Sequence
from enum import StrEnum
from http import HTTPStatus
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONTRACT_VERSION: Final = "1"

# -- identity ---------------------------------------------------------------------------------

PROGRAM_ID_HEADER: Final = "X-Thunder-Program-Id"
"""Our header: the id of the agent program a request belongs to."""

LITELLM_SESSION_HEADER: Final = "x-litellm-session-id"
"""Sent by litellm / OpenHands with the conversation id; accepted as a program id."""

DYNAMO_SESSION_HEADER: Final = "x-dynamo-session-id"
"""NVIDIA Dynamo's agent session header; ThunderAgent reads it as a program id."""

SESSION_ID_HEADER: Final = "X-Session-ID"
"""A plain session header (SkyRL routes by it); ThunderAgent reads it as a program id."""

NVEXT_FIELD: Final = "nvext"
AGENT_CONTEXT_FIELD: Final = "agent_context"
SESSION_ID_FIELD: Final = "session_id"
"""``nvext.agent_context.session_id`` in the body (Dynamo's extension block)."""

PROGRAM_ID_FIELD: Final = "program_id"
"""ThunderAgent's body field, at the top level or inside ``extra_body``."""

EXTRA_BODY_FIELD: Final = "extra_body"

CONTRACT_VERSION_HEADER: Final = "X-Thunder-Contract"
"""Sent by Thunder clients so the service can refuse an incompatible contract."""

API_KEY_HEADER: Final = "Authorization"
"""Client and admin keys travel as ``Authorization: Bearer <key>``."""

CLIENT_RID_FIELD: Final = "rid"
"""SGLang's request id body field. A client's own ``rid`` (RL frameworks set one to abort by it)
is kept as the engine request id when it is printable ASCII without spaces, at most
``CLIENT_RID_MAX_LEN`` characters, and not in use by another request; otherwise the scheduler
gives its own."""
CLIENT_RID_MAX_LEN: Final = 256

REQUEST_ID_HEADER: Final = "X-Thunder-Request-Id"
"""Response header: the engine request id the proxy gave a forwarded request."""

THUNDER_HEADER_PREFIX: Final = "x-thunder-"
"""Headers starting with this (lower case) are ours: the proxy does not forward them."""

# -- program tags -----------------------------------------------------------------------------

RUNTIME_SPEC_TAG: Final = "runtime_spec"
"""Program start tag naming the runtime spec the program will acquire: the scheduler queues
the program for that spec's warm pool until its first request is admitted."""

ROLLOUT_TAG: Final = "rollout"
"""Program start tag: the RL rollout batch the program (one trajectory) belongs to."""
ROLLOUT_GROUP_TAG: Final = "rollout_group"
"""Program start tag: its group in the batch (GRPO: the samples of one prompt share it)."""
ROLLOUT_SAMPLE_TAG: Final = "rollout_sample"
"""Program start tag: its sample index within the group."""

# -- the simulator's trace extension ----------------------------------------------------------

TRACE_FIELD: Final = "thunder_trace"
"""Request body field of a trace replay (``services/sim-engine/README.md``): the simulated
engine prefills the trace's blocks instead of the prompt; the scheduler reads the exact prompt
length and block ids from it."""


class TraceFields:
    """Keys inside the ``thunder_trace`` body field."""

    HASH_IDS: Final = "hash_ids"
    """The trace's block ids of the prompt, in order."""
    PROMPT_TOKENS: Final = "prompt_tokens"
    """The exact prompt length the simulated engine will prefill."""
    SESSION: Final = "session"
    """The trace session the ids belong to (block ids are namespaced by it)."""
    BLOCK_TOKENS: Final = "block_tokens"
    """Tokens per trace block (64 in the shared traces)."""

PROGRAM_ID_MAX_LEN: Final = 256
_PROGRAM_ID_RE: Final = re.compile(r"^[\x21-\x7e]{1,256}$")
_URL_RESERVED: Final = frozenset("/?#%\\")
"""Printable ASCII without spaces and without ``/ ? # % \\``: the id is a path segment of the
lifecycle API (``/v1/programs/{id}/...``), and a ``/`` is decoded before routing even when
percent-encoded. UUIDs, LangGraph thread ids and ``parent.child`` / ``parent:child`` names fit."""


class InvalidProgramId(ValueError):
    """A program id that is empty, too long, or holds spaces or non-ASCII characters."""


def validate_program_id(value: str) -> str:
    """Return ``value`` if it is a valid program id, else raise ``InvalidProgramId``."""
    if (not isinstance(value, str) or not _PROGRAM_ID_RE.match(value)
            or not _URL_RESERVED.isdisjoint(value)):
        raise InvalidProgramId(
            f"program id must be 1-{PROGRAM_ID_MAX_LEN} printable ASCII characters "
            f"without spaces or / ? # % \\, got {value!r:.80}"
        )
    return value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None and not hasattr(headers, "getlist"):
        # plain dicts are case sensitive; Starlette/httpx headers are not.
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def program_id_from(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> str | None:
    """The program id a request carries, by the precedence in the module docstring.

    Raises ``InvalidProgramId`` when an id is present but malformed (callers answer 400).
    """
    value = _header(headers, PROGRAM_ID_HEADER)
    if value is None and body is not None:
        raw = body.get(PROGRAM_ID_FIELD)
        if raw is None:
            extra = body.get(EXTRA_BODY_FIELD)
            if isinstance(extra, Mapping):
                raw = extra.get(PROGRAM_ID_FIELD)
        if raw is not None:
            if not isinstance(raw, str):
                raise InvalidProgramId(f"body field {PROGRAM_ID_FIELD!r} must be a string")
            value = raw
    if value is None:
        value = _header(headers, DYNAMO_SESSION_HEADER) or _header(headers, SESSION_ID_HEADER)
    if value is None and body is not None:
        value = _nvext_session(body)
    if value is None:
        value = _header(headers, LITELLM_SESSION_HEADER)
    if value is None:
        return None
    return validate_program_id(value)


def _nvext_session(body: Mapping[str, Any]) -> str | None:
    """``nvext.agent_context.session_id`` when every level is an object and the id a string."""
    nvext = body.get(NVEXT_FIELD)
    context = nvext.get(AGENT_CONTEXT_FIELD) if isinstance(nvext, Mapping) else None
    session = context.get(SESSION_ID_FIELD) if isinstance(context, Mapping) else None
    if session is None:
        return None
    if not isinstance(session, str):
        raise InvalidProgramId(
            f"body field {NVEXT_FIELD}.{AGENT_CONTEXT_FIELD}.{SESSION_ID_FIELD} must be a string")
    return session


def strip_identity(body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Remove our identity fields from a request body before it is forwarded to an engine.

    ``extra_body`` is an OpenAI-SDK client-side notion; if a raw body carries one holding only
    our field, the now-empty ``extra_body`` is removed too. Mutates and returns ``body``.
    """
    body.pop(PROGRAM_ID_FIELD, None)
    extra = body.get(EXTRA_BODY_FIELD)
    if isinstance(extra, MutableMapping):
        extra.pop(PROGRAM_ID_FIELD, None)
        if not extra:
            del body[EXTRA_BODY_FIELD]
    return body


def engine_request_id(program_id: str, seq: int) -> str:
    """The id a forwarded request gets at the engine (SGLang ``rid``, vLLM ``request_id``)."""
    return f"{program_id}:{seq}"


# -- lifecycle API paths ----------------------------------------------------------------------


class EnginePaths:
    """The engine API paths the scheduler serves (proxied) and engines answer."""

    CHAT_COMPLETIONS: Final = "/v1/chat/completions"
    COMPLETIONS: Final = "/v1/completions"
    GENERATE: Final = "/generate"
    """SGLang's native endpoint."""
    MODELS: Final = "/v1/models"


class RouterPaths:
    """The SGLang router's worker-management paths (``sgl-router`` / ``sgl-model-gateway``
    ``server.rs``), served by the scheduler so an RL framework can use its URL in place of the
    router's. The legacy ones take the worker's URL as the query parameter ``url``."""

    ADD_WORKER: Final = "/add_worker"
    REMOVE_WORKER: Final = "/remove_worker"
    LIST_WORKERS: Final = "/list_workers"
    """Answers ``{"urls": [...]}``."""
    WORKERS: Final = "/workers"
    """``POST`` a ``{"url": ...}`` body to add, ``GET`` to list (``{"workers", "total",
    "stats"}``)."""
    WORKER: Final = "/workers/{url:path}"
    """``GET`` / ``DELETE`` one worker, its URL percent-encoded in the path."""
    FLUSH_CACHE: Final = "/flush_cache"
    """Flush every worker's KV cache (SGLang ``/flush_cache``); ``?url=`` for one worker. Call
    it after a weight update: the scheduler forgets its cached-prefix assumptions too."""
    URL_PARAM: Final = "url"


class Paths:
    """HTTP paths of the scheduler's lifecycle API (relative to its base URL)."""

    PROGRAMS: Final = "/v1/programs"
    PROGRAM: Final = "/v1/programs/{program_id}"
    TOOLS: Final = "/v1/programs/{program_id}/tools"
    TOOL_END: Final = "/v1/programs/{program_id}/tools/{call_id}/end"
    PROGRAM_END: Final = "/v1/programs/{program_id}/end"
    HINTS: Final = "/v1/programs/{program_id}/hints"
    """``CacheHints``: what the adapter knows about the program's KV cache."""
    RUNTIMES: Final = "/v1/programs/{program_id}/runtimes"
    RUNTIME: Final = "/v1/programs/{program_id}/runtimes/{runtime_id}"
    RUNTIME_EXEC: Final = "/v1/programs/{program_id}/runtimes/{runtime_id}/exec"
    RUNTIME_SPECS: Final = "/v1/runtime-specs"
    ROLLOUTS: Final = "/v1/rollouts"
    """``RolloutStart``: open an RL rollout batch (its size, an optional cut-off)."""
    ROLLOUT: Final = "/v1/rollouts/{rollout}"
    """``RolloutView``: a batch's progress and the programs its cut-off ended."""
    ROLLOUT_CUT: Final = "/v1/rollouts/{rollout}/cut"
    """Cut the rest of a batch now (partial rollouts): every live member is ended."""
    THUNDERAGENT_RELEASE: Final = "/programs/release"
    HEALTH: Final = "/health"
    READY: Final = "/ready"
    METRICS: Final = "/metrics"
    LIVE_PAGE: Final = "/live"
    LIVE_STATE: Final = "/live/state"


# -- lifecycle events -------------------------------------------------------------------------


class Framework(StrEnum):
    LANGGRAPH = "langgraph"
    OPENHANDS = "openhands"
    THUNDERAGENT = "thunderagent"
    OPENAI = "openai"
    REPLAY = "replay"
    OTHER = "other"


class ProgramEndStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"


class ToolEndStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class ProgramPhase(StrEnum):
    REASONING = "reasoning"
    ACTING = "acting"


class ProgramStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    TERMINATED = "terminated"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ProgramIdField = Annotated[str, Field(min_length=1, max_length=PROGRAM_ID_MAX_LEN)]


class ProgramStart(_Event):
    """``POST /v1/programs``: a program starts. Without ``program_id`` the service assigns one."""

    program_id: ProgramIdField | None = None
    framework: str = Framework.OTHER.value
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    tags: dict[str, str] = Field(default_factory=dict)
    parent_program_id: ProgramIdField | None = None
    lease_s: float | None = Field(
        default=None, gt=0, description="end the program after this long without an event"
    )

    @field_validator("program_id", "parent_program_id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_program_id(value)


class ToolStart(_Event):
    """``POST /v1/programs/{id}/tools``: the program starts a tool call (its phase: acting)."""

    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    tool_name: Annotated[str, Field(min_length=1, max_length=256)]
    runtime_ids: list[str] = Field(default_factory=list)
    expected_duration_s: float | None = Field(default=None, ge=0)


class ToolEnd(_Event):
    """``POST /v1/programs/{id}/tools/{call_id}/end``: the tool call finished."""

    status: ToolEndStatus = ToolEndStatus.OK
    error: str | None = Field(default=None, max_length=4096)


class ProgramEnd(_Event):
    """``POST /v1/programs/{id}/end``: the program finished; its resources are released."""

    status: ProgramEndStatus = ProgramEndStatus.OK
    reason: str | None = Field(default=None, max_length=4096)


class ThunderAgentRelease(BaseModel):
    """ThunderAgent's ``POST /programs/release`` body."""

    model_config = ConfigDict(extra="ignore")
    program_id: ProgramIdField


# -- cache hints ------------------------------------------------------------------------------


class HintKind(StrEnum):
    """What an adapter knows about a program's KV cache that the engine cannot."""

    BACK_IN = "back_in"
    """The program sends its next LLM request in about ``seconds`` (a tool started with an
    expected duration). Core: the expected end of its running tool calls."""
    SHARED_PREFIX = "shared_prefix"
    """The program's prompts start with a prefix that many programs share (system prompt and
    tool schemas), named by ``prefix_id`` (``shared_prefix_id``), about ``prefix_tokens`` long."""
    CONVERSATION_ENDED = "conversation_ended"
    """The conversation is over: the program ends (the end path) and its KV can go."""
    CONTEXT_COMPACTED = "context_compacted"
    """The program's context was rewritten (summarised or truncated): its old KV will not be
    used again, and its next prompt misses the cache by design."""


HINT_MAX_SECONDS: Final = 86_400.0
_HINT_FIELDS: Final[dict[HintKind, tuple[frozenset[str], frozenset[str]]]] = {
    # kind: (required fields, allowed fields)
    HintKind.BACK_IN: (frozenset({"seconds"}), frozenset({"seconds", "reason"})),
    HintKind.SHARED_PREFIX: (frozenset({"prefix_id"}),
                             frozenset({"prefix_id", "prefix_tokens", "reason"})),
    HintKind.CONVERSATION_ENDED: (frozenset(), frozenset({"reason"})),
    HintKind.CONTEXT_COMPACTED: (frozenset(), frozenset({"reason"})),
}


class CacheHint(_Event):
    """One hint; which fields a kind needs and takes is checked (``HintKind``)."""

    kind: HintKind
    seconds: float | None = Field(default=None, gt=0, le=HINT_MAX_SECONDS)
    prefix_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    prefix_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    reason: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> CacheHint:
        required, allowed = _HINT_FIELDS[self.kind]
        given = {name for name in type(self).model_fields
                 if name != "kind" and getattr(self, name) is not None}
        if missing := sorted(required - given):
            raise ValueError(f"a {self.kind.value} hint needs {', '.join(missing)}")
        if extra := sorted(given - allowed):
            raise ValueError(f"a {self.kind.value} hint does not take {', '.join(extra)}")
        return self


class CacheHints(_Event):
    """``POST /v1/programs/{id}/hints``: hints about one program, applied in order."""

    hints: list[CacheHint] = Field(min_length=1, max_length=16)


def shared_prefix_id(system: str | None, tools: Sequence[Mapping[str, Any]] | None) -> str:
    """The ``prefix_id`` of a system prompt plus tool schemas: 32 hex digits of the SHA-256 of
    their canonical JSON, so an adapter and the proxy (from a request body's first system
    message and ``tools``) compute the same id."""
    canonical = json.dumps({"system": system or "", "tools": list(tools or ())},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# -- lifecycle responses ----------------------------------------------------------------------


class ProgramView(BaseModel):
    """One row of ``GET /v1/programs``: what the scheduler knows of a program."""

    model_config = ConfigDict(extra="allow")

    program_id: str
    status: ProgramStatus
    phase: ProgramPhase
    backend: str | None = None
    framework: str = Framework.OTHER.value
    priority: int = 0
    tags: dict[str, str] = Field(default_factory=dict)
    context_tokens: int = 0
    tokens_exact: bool = False
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    tool_calls: int = 0
    current_tool: str | None = None
    pause_count: int = 0
    paused_s: float = 0.0
    longest_pause_s: float = 0.0
    """The longest single pause so far, the current one included (the aging bound's measure)."""
    paused_share: float = 0.0
    """The share of its life (start to end, or to now) spent paused (the fairness measure)."""
    started_at: float = 0.0
    last_event_at: float = 0.0
    end_status: ProgramEndStatus | None = None
    runtime_ids: list[str] = Field(default_factory=list)


class ProgramList(BaseModel):
    programs: list[ProgramView]


class RolloutStart(_Event):
    """``POST /v1/rollouts``: an RL rollout batch opens. Its programs carry the batch id in
    their ``rollout`` tag (``ROLLOUT_TAG``); ``size`` is how many are coming (without it, the
    members seen so far); with ``cut_fraction`` the rest is cut once that fraction ended."""

    rollout: ProgramIdField
    size: int | None = Field(default=None, ge=1, le=1_000_000)
    cut_fraction: float | None = Field(default=None, gt=0, le=1)

    @field_validator("rollout")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return validate_program_id(value)


class RolloutView(BaseModel):
    """A rollout batch as the scheduler sees it."""

    rollout: str
    num_programs: int
    num_ended: int
    draining: bool
    """More than the drain fraction ended: the live members are stragglers."""
    cut_program_ids: list[str] = Field(default_factory=list)
    live_program_ids: list[str] = Field(default_factory=list)


class ErrorObject(BaseModel):
    """OpenAI's error object: ``message``, ``type``, ``code`` (and ``param``); ``detail`` is
    ours (the offending fields of a validation error)."""

    message: str
    type: str = "invalid_request_error"
    code: str | int | None = None
    param: str | None = None
    detail: Any = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx the service itself produces, in OpenAI's shape ``{"error": {...}}``;
    streams that fail after their status line end with one ``data: {"error": {...}}`` event.

    ``ErrorBody(error="reason", detail=...)`` is accepted too: the reason becomes the message.
    """

    error: ErrorObject

    @model_validator(mode="before")
    @classmethod
    def _from_reason(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            error: dict[str, Any] = {"message": data["error"]}
            if data.get("detail") is not None:
                error["detail"] = data["detail"]
            return {"error": error}
        return data


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    status: int, message: str, *, code: str | None = None, detail: Any = None
) -> dict[str, Any]:
    """The body of an error the service answers: ``{"error": {"message", "type", "code",
    "param"}}`` (``code`` defaults to the status's name, e.g. ``too_many_requests``)."""
    if code is None:
        try:
            code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = str(status)
    error: dict[str, Any] = {"message": message, "type": error_type(status), "code": code,
                             "param": None}
    if detail is not None:
        error["detail"] = detail
    return {"error": error}


__all__ = [
    "AGENT_CONTEXT_FIELD",
    "API_KEY_HEADER",
    "CLIENT_RID_FIELD",
    "CLIENT_RID_MAX_LEN",
    "CONTRACT_VERSION",
    "CONTRACT_VERSION_HEADER",
    "DYNAMO_SESSION_HEADER",
    "EXTRA_BODY_FIELD",
    "HINT_MAX_SECONDS",
    "LITELLM_SESSION_HEADER",
    "NVEXT_FIELD",
    "PROGRAM_ID_FIELD",
    "PROGRAM_ID_HEADER",
    "PROGRAM_ID_MAX_LEN",
    "REQUEST_ID_HEADER",
    "ROLLOUT_GROUP_TAG",
    "ROLLOUT_SAMPLE_TAG",
    "ROLLOUT_TAG",
    "RUNTIME_SPEC_TAG",
    "SESSION_ID_FIELD",
    "SESSION_ID_HEADER",
    "THUNDER_HEADER_PREFIX",
    "TRACE_FIELD",
    "CacheHint",
    "CacheHints",
    "EnginePaths",
    "ErrorBody",
    "ErrorObject",
    "Framework",
    "HintKind",
    "InvalidProgramId",
    "Paths",
    "ProgramEnd",
    "ProgramEndStatus",
    "ProgramList",
    "ProgramPhase",
    "ProgramStart",
    "ProgramStatus",
    "ProgramView",
    "RolloutStart",
    "RolloutView",
    "RouterPaths",
    "ThunderAgentRelease",
    "ToolEnd",
    "ToolEndStatus",
    "ToolStart",
    "TraceFields",
    "engine_request_id",
    "error_body",
    "error_type",
    "program_id_from",
    "shared_prefix_id",
    "strip_identity",
    "validate_program_id",
]
