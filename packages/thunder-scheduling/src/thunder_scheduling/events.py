"""Events fed to the scheduling core: past-tense facts, each stamped with the time ``at``.

The core never reads a clock: ``at`` (seconds, any epoch, monotone) arrives on every event and
in ``tick(now)``. The live service uses ``time.monotonic()`` times its time scale; the
simulator's virtual loop uses its virtual clock. Every state change of a program comes from one
of these events, so the same sequence always gives the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from thunder_core.contract import ProgramEndStatus


class RequestOutcome(StrEnum):
    OK = "ok"                       # the engine answered and the response was delivered
    ERROR = "error"                 # the engine answered with an error, or the upstream failed
    DISCONNECTED = "disconnected"   # the client went away; the upstream request was aborted


@dataclass(frozen=True, slots=True)
class BackendUpdated:
    """A backend's capacity, health or observed use changed (from the backend monitor)."""

    at: float
    backend: str
    healthy: bool
    capacity_tokens: int
    page_size_tokens: int = 1
    used_tokens: int | None = None   # engine-reported KV use, informational
    host_capacity_tokens: int = 0
    """KV tokens the engine can keep in host memory behind its device pool (SGLang HiCache's
    host pool, llama.cpp's saved slots); 0: no host tier. The second budget (``kv_tiers.py``)."""
    host_load_tokens_per_s: float | None = None
    """Host-to-device load-back rate in tokens per second (link bandwidth / KV bytes per
    token), when the backend knows it; None: the policy's configured default."""


@dataclass(frozen=True, slots=True)
class BackendFlushed:
    """A backend's KV cache was emptied: its weights were updated (RL rollout between two
    training steps), its cache was flushed, or the engine restarted. No prefix the core
    assumed cached there is cached any more; the programs placed there stay placed."""

    at: float
    backend: str


@dataclass(frozen=True, slots=True)
class ProgramStarted:
    at: float
    program_id: str
    priority: int = 0
    framework: str = "other"
    tags: dict[str, str] = field(default_factory=dict)
    parent_program_id: str | None = None
    lease_s: float | None = None


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """An LLM request of a program reached the proxy (before it is forwarded)."""

    at: float
    program_id: str
    request_id: str
    prompt_tokens_estimate: int      # documented estimate, see core accounting
    max_output_tokens: int | None = None
    prompt_blocks: tuple[int, ...] = ()
    """Prefix fingerprint: chained hashes of the prompt's leading chunks (block keys in the
    simulator). Only prefix-matching policies (the cache-aware router baseline) read it."""


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """A forwarded (or held) request ended. Usage is None when the engine did not report it."""

    at: float
    program_id: str
    request_id: str
    outcome: RequestOutcome = RequestOutcome.OK
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    ends_with_tool_call: bool = False


@dataclass(frozen=True, slots=True)
class ToolStarted:
    at: float
    program_id: str
    call_id: str
    tool_name: str
    runtime_ids: tuple[str, ...] = ()
    expected_duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class ToolFinished:
    at: float
    program_id: str
    call_id: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class ProgramEnded:
    at: float
    program_id: str
    status: ProgramEndStatus = ProgramEndStatus.OK
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RolloutStarted:
    """An RL rollout batch was opened (``rollouts.py``): ``size`` programs are coming, tagged
    with ``rollout``; with ``cut_fraction`` set, what is left is cut once that fraction of the
    batch has ended. Optional: the first tagged ``ProgramStarted`` opens a batch too."""

    at: float
    rollout: str
    size: int | None = None
    cut_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class RolloutCut:
    """The rest of an RL rollout batch is to be cut now (partial rollouts): every live member
    is released (``Release(reason="rollout_cut")``)."""

    at: float
    rollout: str


@dataclass(frozen=True, slots=True)
class CacheHintReceived:
    """An adapter's cache hint about a program (``thunder_core.contract.CacheHint``; a
    ``conversation_ended`` hint arrives as ``ProgramEnded`` instead). ``kind`` is the
    ``HintKind`` value; the other fields are those the kind takes."""

    at: float
    program_id: str
    kind: str
    seconds: float | None = None
    prefix_id: str | None = None
    prefix_tokens: int | None = None


Event = (
    BackendUpdated
    | BackendFlushed
    | ProgramStarted
    | RequestArrived
    | RequestFinished
    | ToolStarted
    | ToolFinished
    | ProgramEnded
    | CacheHintReceived
    | RolloutStarted
    | RolloutCut
)

__all__ = [
    "BackendFlushed",
    "BackendUpdated",
    "CacheHintReceived",
    "Event",
    "ProgramEnded",
    "ProgramStarted",
    "RequestArrived",
    "RequestFinished",
    "RequestOutcome",
    "RolloutCut",
    "RolloutStarted",
    "ToolFinished",
    "ToolStarted",
]
