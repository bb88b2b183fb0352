"""Read the few samples the backends need from a Prometheus text exposition.

Uses ``prometheus_client``'s own parser (a declared dependency), so label quoting and
escapes are handled as the format specifies. Engines expose one series per label set
(SGLang and vLLM label by model, DP rank / engine index); :func:`sum_samples` adds
them up, which is what a whole-engine total means for counters and for gauges that
count things (requests, tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from thunder_scheduler.backends.base import BackendUnavailable


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_samples(backend: str, text: str) -> list[Sample]:
    """All samples in ``text``; raise ``BackendUnavailable`` if it is not the text format."""
    try:
        return [
            Sample(sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (ValueError, TypeError, IndexError) as exc:
        raise BackendUnavailable(backend, f"/metrics is not Prometheus text: {exc}") from exc


def sum_samples(samples: list[Sample], *names: str) -> float | None:
    """Sum of every series of the first name in ``names`` that is present; None if none is."""
    for name in names:
        values = [s.value for s in samples if s.name == name]
        if values:
            return sum(values)
    return None


def label_sets(samples: list[Sample], name: str) -> list[Mapping[str, str]]:
    """The label sets of every series called ``name`` (info-style metrics carry data there)."""
    return [s.labels for s in samples if s.name == name]
