"""Tool-manager metrics for ``/metrics``: counters and histograms kept by the manager, gauges
read from its snapshot at scrape time (so they never drift from the real state).

Names follow Prometheus conventions (``_total``, ``_bytes``, ``_seconds``). Per-program disk and
ports are in ``ToolManager.snapshot()`` and the runtime API, not in labels (program ids are
unbounded and would explode the series count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

ACQUIRE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
"""From 5 ms (a warm-pool hand-over is a rename, ~10 ms) to 2 min (a cold image build)."""


class ToolMetrics:
    """Instruments live in a private registry; ``register`` exposes them plus snapshot gauges."""

    def __init__(self) -> None:
        self._own = CollectorRegistry(auto_describe=True)
        self.acquire_seconds = Histogram(
            "thunder_tool_acquire_seconds", "Acquire-to-ready time of a runtime", ["source"],
            buckets=ACQUIRE_BUCKETS_S, registry=self._own,
        )
        self.runtimes_created = Counter(
            "thunder_tool_runtimes_created_total", "Runtimes created", ["purpose"],
            registry=self._own,
        )
        self.runtimes_destroyed = Counter(
            "thunder_tool_runtimes_destroyed_total", "Runtimes torn down", ["reason"],
            registry=self._own,
        )
        self.builds = Counter(
            "thunder_tool_image_builds_total", "Image builds", ["outcome"], registry=self._own,
        )
        self.images_evicted = Counter(
            "thunder_tool_images_evicted_total", "Images removed for the disk budget",
            registry=self._own,
        )
        self.exec_seconds = Histogram(
            "thunder_tool_exec_seconds", "Exec duration", ["outcome"],
            buckets=ACQUIRE_BUCKETS_S, registry=self._own,
        )
        self.errors = Counter(
            "thunder_tool_errors_total", "Errors answered", ["error"], registry=self._own,
        )

    def register(self, registry: CollectorRegistry, snapshot: Callable[[], dict[str, Any]]) -> None:
        registry.register(_Collector(self._own, snapshot))


class _Collector(Collector):
    def __init__(self, own: CollectorRegistry, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._own = own
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._own.collect()
        snap = self._snapshot()
        totals = snap["totals"]
        runtimes = GaugeMetricFamily(
            "thunder_tool_runtimes", "Runtimes by state", labels=["state"]
        )
        runtimes.add_metric(["held"], totals["held_runtimes"])
        runtimes.add_metric(["pool"], totals["pool_runtimes"])
        runtimes.add_metric(["creating"], totals["creating_runtimes"])
        yield runtimes
        disk = GaugeMetricFamily("thunder_tool_disk_bytes", "Disk held", labels=["kind"])
        disk.add_metric(["runtimes"], totals["runtime_disk_bytes"])
        disk.add_metric(["images"], totals["image_disk_bytes"])
        yield disk
        yield GaugeMetricFamily(
            "thunder_tool_disk_budget_bytes", "Disk budget", value=totals["disk_budget_bytes"]
        )
        yield GaugeMetricFamily(
            "thunder_tool_ports", "Host ports published by runtimes", value=totals["ports"]
        )
        yield GaugeMetricFamily(
            "thunder_tool_programs", "Programs holding runtimes", value=len(snap["programs"])
        )
        pool = GaugeMetricFamily(
            "thunder_tool_pool_ready", "Warm runtimes per spec", labels=["spec"]
        )
        for name, spec in snap["specs"].items():
            pool.add_metric([name], spec["pool_ready"])
        yield pool


__all__ = ["ACQUIRE_BUCKETS_S", "ToolMetrics"]
