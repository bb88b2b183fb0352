"""Loading agent-session traces (the kv-cache-tester schema) into replayable programs.

Schema: ``data/traces/claude-code-sessions/README.md`` (in the repository). One file is one session;
its ``requests`` list holds LLM requests and subagent markers. We turn it into a ``TraceProgram``:
an ordered tuple of ``TraceStep`` (one LLM request) and ``SpawnGroup`` (subagents the parent
waits for) items.

Rules, each read from the data:

- **Block keys.** ``hash_ids`` are local to one file (subagents share the parent's id space),
  so two files reuse the same small integers. We re-key every prompt as a prefix chain:
  the local key of block ``i`` is a dense integer assigned to the pair (key of block ``i-1``,
  raw id ``i``), shared by the parent and its subagents. Two prompts of one session then share
  a key prefix exactly as long as their raw id runs agree (the README's sharing rule), keys
  are prefix-unique (what ``thunder_sim.engine`` expects), and ``instantiate`` offsets them by
  ``instance << 32`` so sessions (and repeated plays of one session) never collide.
  ``hash_ids`` usually omit the prompt's partial last block (in the shared set, 4,426 of 4,491
  requests of the first 80 files have ``ceil(in / 64) - 1`` ids): the replay pads each prompt to
  ``ceil(in / 64)`` blocks with keys no other prompt shares, as an unshared partial block is.
- **Gaps.** ``think_time`` is the gap between the previous response and this request: tool
  time when ``input_types`` is ``["tool_result"]``, human think time when it is ``["text"]``.
  The first step of a program has no gap.
- **Subagents.** A marker's ``t`` is when the subagent *finished*: in every multi-subagent
  group of the set, ``t - duration_ms/1000`` is the same instant for all members (e.g.
  trace_0254: 137.013-83.993 = 143.843-90.823 = 149.516-96.496 = 53.02 s). So consecutive
  markers form one group spawned together; they run concurrently and the parent waits for all.
  The parent's next step follows ``next.t - max(member t)`` seconds after the last member
  ended (clamped at 0): that residual replaces the step's ``think_time``, which counted the
  subagents' run time that the replay now plays for real.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

TRACE_DIR_ENV = "THUNDER_TRACE_DIR"
DEFAULT_TRACE_DIR = Path("data") / "traces" / "claude-code-sessions"
"""Relative to the repository root: the sessions ship inside the repository."""

BLOCK_TOKENS = 64
"""The schema's ``block_size`` (README: "ids of the prompt's 64-token blocks")."""

INSTANCE_SHIFT = 32


class GapKind(StrEnum):
    NONE = "none"      # first step of a program
    TOOL = "tool"      # input_types == ["tool_result"]: the gap is the tool's duration
    HUMAN = "human"    # input_types == ["text"]: human think time (capped by the replay)


class TraceError(ValueError):
    """A trace file that does not follow the schema (the message names the file and field)."""


@dataclass(frozen=True, slots=True)
class TraceStep:
    index: int                     # position among this program's LLM steps
    prompt_tokens: int             # ``in``
    output_tokens: int             # ``out`` (at least 1)
    blocks: tuple[int, ...]        # prefix-chained keys (see module docstring)
    gap_s: float                   # gap before this step (trace seconds)
    gap_kind: GapKind
    streaming: bool


@dataclass(frozen=True, slots=True)
class SpawnGroup:
    """Subagents spawned together after the parent's previous step; the parent waits for all."""

    children: tuple[TraceProgram, ...]
    kind: str                      # ``subagent_type`` of the first member (the tool's name)


@dataclass(frozen=True, slots=True)
class TraceProgram:
    program_id: str
    items: tuple[TraceStep | SpawnGroup, ...]
    block_tokens: int = BLOCK_TOKENS
    source: str = ""

    @property
    def steps(self) -> tuple[TraceStep, ...]:
        return tuple(i for i in self.items if isinstance(i, TraceStep))

    def walk(self) -> Iterator[TraceProgram]:
        """This program and every descendant, parents first."""
        yield self
        for item in self.items:
            if isinstance(item, SpawnGroup):
                for child in item.children:
                    yield from child.walk()

    @property
    def total_steps(self) -> int:
        return sum(len(p.steps) for p in self.walk())

    @property
    def peak_context_tokens(self) -> int:
        """Largest prompt + output of any step, children included (what must fit the window)."""
        return max(
            (s.prompt_tokens + s.output_tokens for p in self.walk() for s in p.steps), default=0
        )


@dataclass
class _KeyChain:
    """Dense prefix-chained keys for one session (shared by the parent and its subagents).

    Consecutive prompts of a program share long prefixes, so the chain of the previous prompt
    is reused up to the first differing raw id (found by bisection on C-level slice compares);
    only the new tail goes through the dict.
    """

    base: int = 0
    keys: dict[tuple[int, int], int] = field(default_factory=dict)

    def chain(
        self, raw_ids: list[int], prev: tuple[list[int], tuple[int, ...]] | None
    ) -> tuple[int, ...]:
        shared = 0
        head: tuple[int, ...] = ()
        if prev is not None:
            prev_raw, prev_keys = prev
            lo, hi = 0, min(len(prev_raw), len(raw_ids))
            while lo < hi:                       # largest n with prev_raw[:n] == raw_ids[:n]
                mid = (lo + hi + 1) // 2
                if prev_raw[:mid] == raw_ids[:mid]:
                    lo = mid
                else:
                    hi = mid - 1
            shared = lo
            head = prev_keys[:shared]
        out: list[int] = []
        key = head[-1] if head else -1
        keys = self.keys
        for raw in raw_ids[shared:]:
            pair = (key, raw)
            found = keys.get(pair)
            if found is None:
                found = self.base + len(keys) + 1
                keys[pair] = found
            out.append(found)
            key = found
        return head + tuple(out)

    def fresh(self, n: int) -> tuple[int, ...]:
        """``n`` keys no other prompt shares (a prompt's partial last block)."""
        out = []
        for _ in range(n):
            key = self.base + len(self.keys) + 1
            self.keys[(-key, -key)] = key
            out.append(key)
        return tuple(out)



CHILD_SEP = "."
"""Separator of a subagent's program id from its parent's (``trace_0277.agent_001``). Not
"/": program ids are path segments of the lifecycle API (``/v1/programs/{id}/tools``), and a
"/" there, even percent-encoded, is decoded before routing, so a child's lifecycle calls
would miss their routes."""

def _field(req: dict[str, Any], name: str, where: str) -> Any:
    try:
        return req[name]
    except KeyError:
        raise TraceError(f"{where}: missing field {name!r}") from None


def _scaled_ids(raw_ids: list[int], tokens: int, factor: float) -> list[int]:
    if factor == 1:
        return raw_ids
    n_blocks = math.ceil(tokens / BLOCK_TOKENS)
    last = len(raw_ids) - 1
    return [raw_ids[min(int(j / factor), last)] for j in range(n_blocks)]


@dataclass(frozen=True, slots=True)
class _Options:
    max_steps: int | None
    token_scale: float


def _parse_requests(
    requests: list[dict[str, Any]], program_id: str, chain: _KeyChain, where: str,
    opts: _Options,
) -> TraceProgram:
    items: list[TraceStep | SpawnGroup] = []
    i = 0
    step_index = 0
    last_group_end_t: float | None = None
    prev: tuple[list[int], tuple[int, ...]] | None = None
    f = opts.token_scale
    while i < len(requests):
        if opts.max_steps is not None and step_index >= opts.max_steps:
            break
        req = requests[i]
        if not isinstance(req, dict):
            raise TraceError(f"{where}: request {i} is not an object")
        if req.get("type") == "subagent":
            group: list[dict[str, Any]] = []
            while i < len(requests) and requests[i].get("type") == "subagent":
                group.append(requests[i])
                i += 1
            children = []
            for member in group:
                agent = str(_field(member, "agent_id", where))
                child = _parse_requests(
                    list(_field(member, "requests", where)),
                    f"{program_id}{CHILD_SEP}{agent}", chain, f"{where} subagent {agent}", opts,
                )
                if child.steps:
                    children.append(child)
            if children:
                kind = str(group[0].get("subagent_type") or "task")
                items.append(SpawnGroup(tuple(children), kind))
            last_group_end_t = max(float(m.get("t") or 0.0) for m in group)
            continue
        raw_ids = _field(req, "hash_ids", where)
        prompt_tokens = int(_field(req, "in", where))
        if prompt_tokens <= 0 or not isinstance(raw_ids, list) or not raw_ids:
            raise TraceError(f"{where}: request {i} has no prompt ({prompt_tokens} tokens)")
        output_tokens = max(1, int(req.get("out") or 0))
        if f != 1:
            prompt_tokens = max(1, math.ceil(prompt_tokens * f))
            output_tokens = max(1, math.ceil(output_tokens * f))
            raw_ids = _scaled_ids(raw_ids, prompt_tokens, f)
        blocks = chain.chain(raw_ids, prev)
        prev = (raw_ids, blocks)
        need = -(-prompt_tokens // BLOCK_TOKENS)
        if len(blocks) < need:      # hash_ids usually omit the partial last block
            blocks += chain.fresh(need - len(blocks))
        elif len(blocks) > need:
            blocks = blocks[:need]
        if step_index == 0 and not items:
            gap_s, kind = 0.0, GapKind.NONE
        else:
            kinds = req.get("input_types") or []
            kind = GapKind.HUMAN if "text" in kinds and "tool_result" not in kinds else GapKind.TOOL
            if last_group_end_t is not None:
                gap_s = max(0.0, float(_field(req, "t", where)) - last_group_end_t)
            else:
                gap_s = max(0.0, float(req.get("think_time") or 0.0))
        items.append(
            TraceStep(
                index=step_index, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                blocks=blocks, gap_s=gap_s, gap_kind=kind, streaming=req.get("type") == "s",
            )
        )
        last_group_end_t = None
        step_index += 1
        i += 1
    return TraceProgram(program_id=program_id, items=tuple(items), source=where)


def parse_session(
    data: dict[str, Any], where: str = "<trace>", *, max_steps: int | None = None,
    token_scale: float = 1.0, key_space: int = 0,
) -> TraceProgram:
    """One session object (a decoded trace file) as a program.

    ``max_steps`` keeps the first N LLM steps of the program and of each subagent;
    ``token_scale`` multiplies every prompt and output token count by a factor in (0, 1],
    keeping the prefix structure: scaled block ``j`` is original block ``floor(j / factor)``,
    so two scaled prompts share about ``factor`` times the blocks the originals share.
    ``key_space`` (0 to 2**31) puts the session's block keys in their own range, so sessions
    loaded with different key spaces never share a key.
    """
    if not 0 <= key_space < 2**31:
        raise ValueError(f"key_space must be in [0, 2**31), got {key_space}")
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise TraceError(f"{where}: not a session object with a 'requests' list")
    if not 0 < token_scale <= 1:
        raise ValueError(f"token scale must be in (0, 1], got {token_scale}")
    block = int(data.get("block_size") or BLOCK_TOKENS)
    if block != BLOCK_TOKENS:
        raise TraceError(f"{where}: block_size {block} unsupported (expected {BLOCK_TOKENS})")
    session_id = str(data.get("id") or Path(where).name.split(".")[0])
    opts = _Options(max_steps, token_scale)
    program = _parse_requests(
        data["requests"], session_id, _KeyChain(base=key_space << INSTANCE_SHIFT), where, opts
    )
    if not program.steps:
        raise TraceError(f"{where}: session has no LLM requests")
    return program


_IN_OUT = re.compile(rb'"in":\s*(\d+),.*?"out":\s*(\d+)', re.DOTALL)


def read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def scan_peak_tokens(raw: bytes, token_scale: float = 1.0) -> int:
    """Peak prompt + output of any request in a session file, without decoding it.

    Decoding the JSON costs seconds per hundred sessions (millions of block ids); the context
    filter only needs each request's ``in`` and ``out``, which a byte scan finds.
    """
    f = token_scale
    if f == 1:
        return max((int(a) + int(b) for a, b in _IN_OUT.findall(raw)), default=0)
    return max(
        (max(1, math.ceil(int(a) * f)) + max(1, math.ceil(int(b) * f))
         for a, b in _IN_OUT.findall(raw)),
        default=0,
    )


def decode(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TraceError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TraceError(f"{where}: not a session object")
    return data


def load_file(
    path: Path, *, max_steps: int | None = None, token_scale: float = 1.0, key_space: int = 0
) -> TraceProgram:
    return parse_session(
        decode(read_bytes(path), str(path)), str(path), max_steps=max_steps,
        token_scale=token_scale, key_space=key_space,
    )


def default_trace_dir(repo_root: Path | None = None) -> Path:
    """``$THUNDER_TRACE_DIR``, else ``<repo root>/data/traces/claude-code-sessions``."""
    env = os.environ.get(TRACE_DIR_ENV)
    if env:
        return Path(env)
    root = repo_root or _repo_root()
    return (root / DEFAULT_TRACE_DIR).resolve()


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "uv.lock").exists() and (parent / "services").is_dir():
            return parent
    return Path.cwd()


def trace_files(path: Path) -> list[Path]:
    """The session files at ``path``: a file, or a folder (its ``raw/`` subfolder if present)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TraceError(
            f"trace path {path} does not exist (pass --traces PATH or set {TRACE_DIR_ENV})"
        )
    folder = path / "raw" if (path / "raw").is_dir() else path
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".json", ".json.gz")))
    if not files:
        raise TraceError(f"no *.json or *.json.gz session files in {folder}")
    return files


def load_sessions(path: Path, limit: int | None = None) -> list[TraceProgram]:
    """Every session at ``path`` (or the first ``limit``), unscaled and untrimmed."""
    files = trace_files(path)
    if limit is not None:
        files = files[:limit]
    return [load_file(f, key_space=i + 1) for i, f in enumerate(files)]


# -- instantiation (fresh key space and id per play) -------------------------------------------


def instantiate(program: TraceProgram, instance: int, suffix: str = "") -> TraceProgram:
    """A copy whose block keys move to key space ``instance`` and whose ids end in ``suffix``.

    Used when a closed loop plays one session more than once: each play must miss the other's
    cache, as two different real sessions would.
    """
    base = instance << INSTANCE_SHIFT
    mask = (1 << INSTANCE_SHIFT) - 1

    def remap(p: TraceProgram) -> TraceProgram:
        items: list[TraceStep | SpawnGroup] = []
        for item in p.items:
            if isinstance(item, TraceStep):
                items.append(replace(item, blocks=tuple(base | (b & mask) for b in item.blocks)))
            else:
                items.append(replace(item, children=tuple(remap(c) for c in item.children)))
        pid = p.program_id
        return replace(p, program_id=pid.replace(CHILD_SEP, suffix + CHILD_SEP, 1)
                       if CHILD_SEP in pid else pid + suffix, items=tuple(items))

    return remap(program)


def ideal_hit_tokens(programs: Iterable[TraceProgram]) -> tuple[int, int]:
    """(cached, prompt) tokens an unlimited whole-block prefix cache gets, in trace order.

    Each step's cached tokens are its longest block-key prefix shared with any earlier step of
    the same session (children included, in the order they appear), in whole blocks, capped
    at ``prompt_tokens``. Used as the ideal hit rate in reports.
    """
    cached = prompt = 0
    for root in programs:
        seen: set[int] = set()
        for p in root.walk():
            for s in p.steps:
                n = 0
                for b in s.blocks:
                    if b not in seen:
                        break
                    n += 1
                cached += min(n * p.block_tokens, s.prompt_tokens)
                prompt += s.prompt_tokens
                seen.update(s.blocks)
        del seen
    return cached, prompt
