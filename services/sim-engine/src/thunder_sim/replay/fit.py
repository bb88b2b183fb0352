"""Fitting trace sessions to a model's context window: explicit, and printed with every result.

The shared sessions were recorded on Claude models: prompts have a median of 104k tokens and a
p99 of 499k (trace README), beyond a small open model's window. Qwen3-8B's window is 32,768
tokens natively and 131,072 with YaRN rope scaling (Qwen/Qwen3-8B model card on Hugging Face:
"Context Length: 32,768 natively and 131,072 tokens with YaRN"). Of the 498 shared sessions,
13 have a peak prompt + output within 32,768 tokens and 178 within 131,072 (measured with
``thunder-sim replay --dry-run --context-tokens N``).

Order of operations (each optional, each stated in ``FitResult.describe()``):

1. ``max_steps``: keep the first N LLM steps of each program (and of each subagent);
2. ``token_scale``: multiply every prompt and output token count by a factor in (0, 1],
   keeping the prefix structure (``trace.parse_session``);
3. ``context_tokens``: drop sessions whose peak prompt + output (subagents included) still
   exceeds the window;
4. ``sessions`` / ``seed``: take the first N sessions that fit, in file order, or in a seeded
   shuffle of the files when a seed is given.

Decoding a session costs far more than scanning it, so the window is checked on the raw bytes
first (``trace.scan_peak_tokens``) and only kept sessions are decoded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from thunder_sim.replay.trace import (
    TraceProgram,
    decode,
    parse_session,
    read_bytes,
    scan_peak_tokens,
    trace_files,
)

QWEN3_8B_NATIVE_CONTEXT_TOKENS = 32_768    # Qwen3-8B model card: native context
QWEN3_8B_YARN_CONTEXT_TOKENS = 131_072     # Qwen3-8B model card: with YaRN (factor 4)


@dataclass(frozen=True, slots=True)
class ContextFit:
    context_tokens: int | None = QWEN3_8B_YARN_CONTEXT_TOKENS
    token_scale: float = 1.0
    max_steps: int | None = None
    sessions: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.context_tokens is not None and self.context_tokens <= 0:
            raise ValueError(f"--context-tokens must be positive, got {self.context_tokens}")
        if not 0 < self.token_scale <= 1:
            raise ValueError(f"--token-scale must be in (0, 1], got {self.token_scale}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"--max-steps must be positive, got {self.max_steps}")
        if self.sessions is not None and self.sessions <= 0:
            raise ValueError(f"--sessions must be positive, got {self.sessions}")

    def load(self, path: Path) -> FitResult:
        files = trace_files(path)
        if self.seed is not None:
            random.Random(self.seed).shuffle(files)
        kept: list[TraceProgram] = []
        scanned = dropped = 0
        for ordinal, file in enumerate(files):
            if self.sessions is not None and len(kept) >= self.sessions:
                break
            scanned += 1
            raw = read_bytes(file)
            window = self.context_tokens
            fits_untrimmed = window is None or scan_peak_tokens(raw, self.token_scale) <= window
            if not fits_untrimmed and self.max_steps is None:
                dropped += 1
                continue
            program = parse_session(
                decode(raw, str(file)), str(file), max_steps=self.max_steps,
                token_scale=self.token_scale, key_space=ordinal + 1,
            )
            if window is not None and program.peak_context_tokens > window:
                dropped += 1
                continue
            kept.append(program)
        return FitResult(self, tuple(kept), available=len(files), scanned=scanned,
                         dropped=dropped)


@dataclass(frozen=True, slots=True)
class FitResult:
    fit: ContextFit
    programs: tuple[TraceProgram, ...]
    available: int
    scanned: int
    dropped: int

    def describe(self) -> str:
        f = self.fit
        parts = [f"{self.available} session files, {self.scanned} scanned"
                 + (f" in seeded order (seed {f.seed})" if f.seed is not None else "")]
        if f.max_steps is not None:
            parts.append(f"trimmed to their first {f.max_steps} steps")
        parts.append(f"token scale {f.token_scale:g}")
        if f.context_tokens is None:
            parts.append("no context filter")
        else:
            parts.append(f"dropped {self.dropped} whose peak prompt+output exceeds "
                         f"{f.context_tokens:,} tokens")
        steps = sum(p.total_steps for p in self.programs)
        parts.append(f"replaying {len(self.programs)} sessions ({steps:,} steps)")
        return ", ".join(parts)
