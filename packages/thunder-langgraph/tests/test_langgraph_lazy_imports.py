"""``import thunder_langgraph`` loads only what ``wrap`` needs; ``langchain`` only for the
middleware. Each check runs in a fresh interpreter so earlier imports cannot hide a regression."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import thunder_langgraph
from thunder_core.contract import CONTRACT_VERSION


def _top_level_modules_after(code: str) -> set[str]:
    probe = code + (
        "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PATH": "/usr/bin:/bin"}  # no THUNDER_SCHEDULER_URL: the .pth toggle stays off
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_package_loads_langchain_core_not_langchain() -> None:
    loaded = _top_level_modules_after("import thunder_langgraph\nthunder_langgraph.wrap")
    assert "langchain_core" in loaded
    assert "langchain" not in loaded


def test_middleware_loads_langchain() -> None:
    loaded = _top_level_modules_after("from thunder_langgraph import ThunderMiddleware")
    assert "langchain" in loaded


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        thunder_langgraph.no_such_name  # noqa: B018


def test_adapter_pins_the_core_contract() -> None:
    assert thunder_langgraph.CONTRACT_VERSION == CONTRACT_VERSION
    assert set(thunder_langgraph.__all__) <= set(dir(thunder_langgraph))
