"""Per-tool duration estimates: an exponentially weighted moving average of observed durations
per tool name (``alpha = SchedulerConfig.tool_ewma_alpha``; the first sample is taken as is).
A client's ``ToolStarted.expected_duration_s`` hint wins over the estimate for that call; how
the policies use it is in docs/scheduling.md.
"""

from __future__ import annotations


class ToolTimeEstimator:
    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self._alpha = alpha
        self._mean_s: dict[str, float] = {}
        self._samples: dict[str, int] = {}

    def observe(self, tool_name: str, duration_s: float) -> None:
        duration_s = max(0.0, duration_s)
        previous = self._mean_s.get(tool_name)
        if previous is None:
            self._mean_s[tool_name] = duration_s
        else:
            self._mean_s[tool_name] = self._alpha * duration_s + (1 - self._alpha) * previous
        self._samples[tool_name] = self._samples.get(tool_name, 0) + 1

    def estimate_s(self, tool_name: str) -> float | None:
        return self._mean_s.get(tool_name)

    def restore(self, tool_name: str, mean_s: float, samples: int) -> None:
        """Set an estimate back from a checkpoint (``checkpoint.restore``)."""
        self._mean_s[tool_name] = max(0.0, float(mean_s))
        self._samples[tool_name] = max(1, int(samples))

    def snapshot(self) -> dict[str, tuple[float, int]]:
        """Tool name -> (estimate in seconds, number of samples), sorted by name."""
        return {name: (self._mean_s[name], self._samples[name]) for name in sorted(self._mean_s)}


__all__ = ["ToolTimeEstimator"]
