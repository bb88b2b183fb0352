"""The Grafana dashboard loads, and every query names series (and labels) the service exports.

The exported set is the real app's registry with the tool manager running: the same registry
``GET /metrics`` renders (families without samples yet included, with their label names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from thunder_scheduler.app import create_app
from thunder_scheduler.metrics import SeriesDoc, describe_series
from thunder_scheduler.settings import load_settings

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "thunder-scheduler.json"
_SERIES_RE = re.compile(r"\bthunder_[a-z0-9_]+\b")
_BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER_RE = re.compile(r"\{([^}]*)\}")
_LABEL_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


@pytest.fixture(scope="module")
def exported() -> dict[str, SeriesDoc]:
    settings = load_settings({"tools_enabled": True, "tools": {"backend": "local"}})
    registry = create_app(settings, backends=[]).state.thunder.metrics.registry
    return {name: row for row in describe_series(registry) for name in row.sample_names()}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _targets(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"])
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_a_grafana_dashboard(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_every_query_names_exported_series_and_labels(
    dashboard: dict, exported: dict[str, SeriesDoc]
) -> None:
    problems = []
    for title, expr in _targets(dashboard):
        names = _SERIES_RE.findall(expr)
        if not names:
            problems.append(f"{title}: {expr!r} names no thunder_ series")
        unknown = [name for name in names if name not in exported]
        problems += [f"{title}: unknown series {name}" for name in unknown]
        labels = {"le"} | {label for name in names if name in exported
                           for label in exported[name].labels}
        used = {label.strip() for group in _BY_RE.findall(expr) for label in group.split(",")}
        used |= {label for group in _MATCHER_RE.findall(expr) for label in _LABEL_RE.findall(group)}
        problems += [f"{title}: unknown label {label!r} in {expr!r}"
                     for label in sorted(used - labels - {""})]
    assert problems == []


def test_dashboard_covers_what_operators_watch(dashboard: dict) -> None:
    exprs = " ".join(expr for _, expr in _targets(dashboard))
    for series in (
        "thunder_backend_kv_used_tokens",         # KV use per backend
        "thunder_programs",                        # programs by phase and status
        "thunder_pauses_total", "thunder_restores_total", "thunder_migrations_total",
        "thunder_hold_seconds_bucket",             # hold time
        "thunder_cache_hit_rate",                  # hit rate
        "thunder_tool_runtimes",                   # tool runtimes
        "thunder_backend_request_seconds_bucket",  # per-backend latency
        "thunder_programs_started_total", "thunder_programs_ended_total",
        "thunder_build_info",
    ):
        assert re.search(rf"\b{series}\b", exprs), series


def test_a_misspelled_series_would_be_caught(exported: dict[str, SeriesDoc]) -> None:
    assert "thunder_pauses_total" in exported
    assert "thunder_pause_total" not in exported
    assert "thunder_hold_seconds_bucket" in exported and "thunder_hold_seconds" not in exported
