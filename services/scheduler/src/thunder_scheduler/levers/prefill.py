"""Prefill-only requests: a request's prompt computed into the engine's prefix cache.

:func:`prefill_body` turns a request body into one that produces a single output token (no
streaming, one choice): the engine prefills the whole prompt, so the program's next request,
which extends it, finds it cached. :func:`send_prefill` sends it to an engine, decorated as the
proxy decorates a forwarded request (request id, priority, slot), through the injected
control-plane client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from thunder_core.contract import EnginePaths
from thunder_scheduler.backends.base import Backend, RequestHints

__all__ = ["PrefillFailed", "prefill_body", "send_prefill"]

_DROPPED: Final = frozenset({"stream", "stream_options", "n"})


class PrefillFailed(RuntimeError):
    """The engine refused a prefill-only request."""


def prefill_body(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` asking for one output token, unstreamed, one choice."""
    warm = {k: v for k, v in body.items() if k not in _DROPPED}
    if path == EnginePaths.GENERATE:
        params = dict(warm.get("sampling_params") or {})
        params["max_new_tokens"] = 1
        warm["sampling_params"] = params
    else:
        warm["max_tokens"] = 1
        warm.pop("max_completion_tokens", None)
    return warm


async def send_prefill(
    http: httpx.AsyncClient,
    backend: Backend,
    path: str,
    body: Mapping[str, Any],
    hints: RequestHints,
    timeout_s: float,
) -> None:
    """POST the prefill-only form of ``body`` to ``backend``; raises :class:`PrefillFailed`."""
    warm = backend.decorate(path, prefill_body(path, body), hints)
    response = await http.post(
        backend.base_url + path, json=warm, headers=backend.request_headers(hints),
        timeout=timeout_s,
    )
    if response.status_code >= 400:
        raise PrefillFailed(f"prefill on {backend.name} answered {response.status_code}")
