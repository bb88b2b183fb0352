"""Sutradhara's two tool levers as the virtual replay models them: the modelling rules.

The trace records each response's output length and that it ended in ``tool_use``, not where
inside the output the call's arguments close nor how many calls it held (``output_types`` is a
set). So the replay places them by rule:

- **Where a tool call ends in the output** (``tool_call_end_token``): a response's tool call is
  the tail of its output (chat models emit text / reasoning first, then the calls), and its
  last argument token is followed by ``trailing_tokens`` tokens that carry no argument: the
  closing of the JSON object and of the call, and the end of turn. Default 4, Qwen3's hermes
  format (``}}``, ``\\n``, ``</tool_call>``, ``<|im_end|>``). The position is clamped to
  ``[1, output_tokens]``. One call per tool-calling response by default: the trace does not
  record parallel calls, and the replay's gap is the whole tool step.
- **Parallel calls** (``parallel_calls = p``, the ``parallel`` workload of
  ``bench/replay/workloads.py``): every tool-calling response holds ``p`` calls that split its
  output evenly, in order (``tool_call_ends``): call ``j`` (1-based) ends at token
  ``ceil(j * (output_tokens - trailing_tokens) / p)``, clamped to ``[1, output_tokens]``,
  so the last call ends where the single call would. The step's trace gap ``g`` is the
  longest call; the calls run ``g``, ``g/2``, ..., ``g/p`` (``call_durations``), the longest
  being call ``(step index mod p) + 1`` and the rest following in that rotation, so over a
  session the longest call sits at every position equally often. Without streaming dispatch
  every call starts when the response ends and the step lasts ``g``, exactly as with one
  call; with it, each call starts when its own last argument token is produced and the step
  ends when the last call does. The scheduler hears the step as one tool call
  (``ToolStarted`` / ``ToolFinished``, as before).
- **Streaming dispatch** (``--streaming-dispatch``): the tool starts when the engine has
  produced that token (the replay follows each request's ``StepResult.progress`` and caps the
  engine's fast-forward so the iteration that produces it ends there), not when the response
  ends. The tool's duration stays the trace gap, so the next request is sent at
  ``max(response end, max over calls of (call start + call duration))``. The scheduler still
  hears ``ToolStarted`` when the response ends (the request is still running until then);
  only the tool's clock moves.
- **Tool-aware prompt split** (``--prompt-split``): when a response ends in a tool call, the
  next prompt is known up to the end of that response: ``known_prefix_tokens`` =
  ``min(next prompt, this prompt + this output)``, of which the whole blocks (only whole blocks
  are cached) are the next prompt's leading block keys. While the tool runs, the replay
  prefills them on the program's engine as a prefill-only request (``max_new_tokens=0``) at
  the lowest engine priority, unless they are all cached there already or the scheduler has
  paused the program. The simulated engine never caches output blocks, so on an append-only
  session the split always has this response's output to prefill. Whether it is sent is
  ``thunder_scheduling.prompt_split`` (the live driver's rule), fed what the engine caches.
- **Cache hints** (``cache_hints``): what an adapter says with ``POST .../hints``, delivered to
  the core as the lifecycle API delivers it (``CacheHintReceived``). ``back_in``: right after
  each ``ToolStarted`` the replay sends ``back_in`` with the tool step's duration (the
  adapter's ``thunder_expected_duration_s``, here exact: an oracle, the best case), so the
  core knows when the program returns (Thunder: its acting weight goes back to full and the
  program is pre-restored ``prewarm_lead_s`` before that; the split's rule reads the expected
  time). ``conversation_ended`` is the program's end, which the replay always sends.
  ``shared_prefix`` has nothing to act on here: the trace's sessions share no prompt blocks
  (keys are per session), and ``context_compacted`` has no event in the trace.
"""

from __future__ import annotations

from dataclasses import dataclass

TOOL_CALL_TRAILING_TOKENS = 4
"""Tokens after a tool call's last argument token (Qwen3 hermes format, see module doc)."""


@dataclass(frozen=True, slots=True)
class ToolLevers:
    streaming_dispatch: bool = False
    prompt_split: bool = False
    cache_hints: bool = False
    trailing_tokens: int = TOOL_CALL_TRAILING_TOKENS
    parallel_calls: int = 1
    """Tool calls per tool-calling response (a workload rule, not a lever: module doc)."""

    def __post_init__(self) -> None:
        if self.trailing_tokens < 0:
            raise ValueError(
                f"--tool-call-trailing-tokens must be >= 0, got {self.trailing_tokens}")
        if self.parallel_calls < 1:
            raise ValueError(f"--parallel-calls must be >= 1, got {self.parallel_calls}")

    @property
    def name(self) -> str:
        """``none`` or the levers on joined by ``+``: ``split``, ``stream``, ``cache``."""
        parts = [n for n, on in (("split", self.prompt_split),
                                 ("stream", self.streaming_dispatch),
                                 ("cache", self.cache_hints)) if on]
        return "+".join(parts) or "none"


def tool_call_end_token(output_tokens: int, trailing_tokens: int) -> int:
    """The output position (1-based) of the tool call's last argument token."""
    return max(1, min(output_tokens, output_tokens - trailing_tokens))


def tool_call_ends(output_tokens: int, trailing_tokens: int, calls: int) -> tuple[int, ...]:
    """The output positions (1-based, non-decreasing) of each of ``calls`` parallel calls'
    last argument token; the last is ``tool_call_end_token``."""
    span = max(0, output_tokens - trailing_tokens)
    return tuple(max(1, min(output_tokens, -(-j * span // calls))) for j in range(1, calls + 1))


def call_durations(gap_s: float, calls: int, step_index: int) -> tuple[float, ...]:
    """How long each of ``calls`` parallel calls runs when the step's gap is ``gap_s``: ``g``,
    ``g/2``, ..., ``g/p``, rotated so call ``(step_index mod p) + 1`` is the longest."""
    return tuple(gap_s / ((j - step_index) % calls + 1) for j in range(calls))


def known_prefix_blocks(
    next_blocks: tuple[int, ...], next_prompt_tokens: int, prompt_tokens: int,
    output_tokens: int, block_tokens: int,
) -> tuple[int, ...]:
    """The whole blocks of the next prompt known when this response (``prompt_tokens`` in,
    ``output_tokens`` out) ends in a tool call."""
    known = min(next_prompt_tokens, prompt_tokens + output_tokens)
    return next_blocks[: known // block_tokens]
