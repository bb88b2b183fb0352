"""One limit on JSON nesting for every route: 254 levels (400 beyond, never 500).

Why 254: the proxy re-serialises every body with orjson, which writes at most 254 levels
(``orjson.dumps`` raises past them) while it reads up to 1,024; Python's ``json`` (FastAPI's
routes) raises ``RecursionError`` somewhere near 1,000. Without one limit a body nested 255 to
1,024 levels deep parsed fine and then failed as a 500. No OpenAI, SGLang or lifecycle body
comes near it (tool schemas nest a dozen levels).

:func:`exceeds_depth` scans raw bytes (strings skipped), for the small lifecycle bodies that
are read whole before parsing; the proxy parses with orjson and checks while re-serialising,
where the hot path pays nothing (see ``proxy/routes.py``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_JSON_DEPTH", "depth_error", "exceeds_depth"]

MAX_JSON_DEPTH: Final = 254

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def depth_error() -> str:
    return f"JSON body nested deeper than {MAX_JSON_DEPTH} levels"


def exceeds_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays / objects more than ``limit`` levels."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
