"""The cost model interface: how long one engine iteration takes on the modelled GPU.

SGLang runs prefill (extend) iterations and decode iterations separately by default
(``--enable-mixed-chunk`` is off), so a cost model prices the two kinds apart. Decode time may
only depend on the batch size and the sum of the batch's context lengths, which lets the
engine fast-forward many decode iterations with O(1) pricing per iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class PrefillChunk(NamedTuple):
    """One request's part of a prefill iteration."""

    prefix_tokens: int   # tokens already in KV before this chunk (cached or earlier chunks)
    extend_tokens: int   # tokens computed in this chunk


class CostModel(Protocol):
    def prefill_time_s(self, chunks: Sequence[PrefillChunk]) -> float:
        """Seconds for one prefill iteration over ``chunks``."""
        ...

    def decode_time_s(self, batch_size: int, context_tokens: int) -> float:
        """Seconds for one decode iteration of ``batch_size`` requests whose contexts sum to
        ``context_tokens`` (each produces one token)."""
        ...
