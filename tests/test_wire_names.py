"""Every wire name is spelled once, in ``thunder_core.contract``: no source file of the
service, the simulator, the adapters or the benches writes one as a string literal."""

from __future__ import annotations

import re
from pathlib import Path

from thunder_core import contract

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("packages/*/src/**/*.py"),
           *ROOT.glob("bench/**/*.py")]
NAMES = {
    contract.PROGRAM_ID_HEADER, contract.CONTRACT_VERSION_HEADER, contract.REQUEST_ID_HEADER,
    contract.LITELLM_SESSION_HEADER, contract.RUNTIME_SPEC_TAG, contract.TRACE_FIELD,
    contract.Paths.PROGRAMS, contract.Paths.RUNTIME_SPECS, contract.Paths.THUNDERAGENT_RELEASE,
}


DOC_CODE = re.compile(r"``.*?``")
"""Inline code in docstrings (``extra_headers["X-Thunder-Program-Id"]``) may show a name."""


def test_wire_names_are_imported_not_spelled() -> None:
    literal = re.compile(
        "|".join(f"[\"']{re.escape(name)}[\"']" for name in sorted(NAMES)), re.IGNORECASE
    )
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in SOURCES if path.name != "contract.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(DOC_CODE.sub("", line))
    ]
    assert len(SOURCES) > 50
    assert found == []
