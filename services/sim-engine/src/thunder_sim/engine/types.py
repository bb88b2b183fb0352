"""The engine model's inputs and outputs: the only names the HTTP shell and the replay use.

The engine model (``thunder_sim.engine``) is pure: no I/O, no asyncio, no clock reads. Time is
passed in (``now`` in modelled seconds) and each ``step()`` says how long the modelled GPU took.

Prompts are sequences of *blocks*: a block is ``block_tokens`` consecutive tokens identified by
an integer key that already encodes its whole prefix (a hash chain, like vLLM's block hashes,
or a trace's ``hash_ids``, which are prefix-unique by construction). Two prompts share a KV
prefix exactly as long as their leading block keys agree. The last block may be partial: its
length is ``prompt_tokens - block_tokens * (len(blocks) - 1)``; only whole blocks are cached
(as SGLang with a page size caches whole pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FinishReason(StrEnum):
    LENGTH = "length"      # produced max_new_tokens (what the sim always does unless aborted)
    ABORT = "abort"        # aborted by /abort_request or a client disconnect


@dataclass(frozen=True, slots=True)
class EngineRequest:
    rid: str
    prompt_blocks: tuple[int, ...]
    prompt_tokens: int
    max_new_tokens: int
    priority: int = 0               # SGLang semantics: with priority scheduling, higher first
    session_id: str | None = None   # SGLang session: marks the prefix as referenced
    arrival_s: float = 0.0
    owner: str | None = None        # the program it belongs to (recompute ledger only)


@dataclass(frozen=True, slots=True)
class TokenProgress:
    """Output tokens a request produced in one step (``first`` marks its first token)."""

    rid: str
    new_tokens: int
    first: bool


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    rid: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int              # radix match when the request was (last) admitted
    recomputed_tokens: int          # prompt+output tokens prefilled again after a retraction
    finish_reason: FinishReason
    arrival_s: float
    first_token_s: float | None
    finished_s: float
    retractions: int = 0
    miss_tokens: dict[str, int] = field(default_factory=dict)
    host_cached_tokens: int = 0     # of cached_tokens, loaded back from HiCache's host tier
    """Why the ``prompt_tokens - cached_tokens`` missed tokens of the last admission were not
    hits: cause (``ledger.MissCause``) -> tokens, summing to exactly that difference."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """One engine iteration: what it did and how long the modelled GPU took."""

    duration_s: float
    prefill_tokens: int = 0
    decode_tokens: int = 0
    progress: tuple[TokenProgress, ...] = ()
    finished: tuple[FinishedRequest, ...] = ()
    retracted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """What SGLang's ``/v1/loads`` and ``/metrics`` report, from the model's state."""

    num_running_reqs: int
    num_waiting_reqs: int
    num_used_tokens: int            # KV tokens held by running requests and the cache
    max_total_num_tokens: int       # KV pool capacity C
    token_usage: float
    cache_hit_rate: float           # cumulative cached / prompt tokens
    gen_throughput: float           # output tokens per modelled second, recent window
    hicache_host_used_tokens: int = 0     # HiCache host pool in use (0 when off)
    hicache_host_total_tokens: int = 0    # HiCache host pool capacity (0 when off)


@dataclass
class EngineCounters:
    """Cumulative counters (``sglang:*_total``)."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    cached_tokens: int = 0
    recomputed_tokens: int = 0
    evicted_tokens: int = 0
    num_retracted_reqs: int = 0
    num_requests: int = 0
    num_aborted_reqs: int = 0
    load_back_tokens: int = 0        # HiCache: tokens loaded host -> device
    load_back_s: float = 0.0         # HiCache: their transfer time (before overlap)
    hicache_backup_tokens: int = 0   # HiCache: tokens written device -> host
    prefill_s: float = 0.0           # engine time in prefill iterations (load-back included)
    decode_s: float = 0.0            # engine time in decode iterations
    decode_batch_s: float = 0.0      # sum of batch size x iteration time (mean batch = / decode_s)
    decode_context_s: float = 0.0    # sum of the batch's context tokens x iteration time
    miss_tokens: dict[str, int] = field(default_factory=dict)
    """Missed prompt tokens of every admission (retracted and aborted ones too) by cause."""
    ttft_s: list[float] = field(default_factory=list)
    e2e_latency_s: list[float] = field(default_factory=list)
