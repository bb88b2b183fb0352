"""Backend registry: the CLI spelling of each engine kind, a factory and a spec parser.

``--backend KIND=URL`` (optionally ``NAME@KIND=URL``) names one engine. ``KIND`` is a
key of :data:`BACKEND_TYPES`; ``URL`` is the server's root (``http://gpu1:30000``;
a trailing ``/v1`` is accepted and dropped, any other path is refused because the
proxy appends ``/v1/...`` and ``/generate`` itself). Without ``NAME@`` the name is
``KIND-HOST-PORT``, unique per engine.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from thunder_scheduler.backends.base import Backend, BackendKind
from thunder_scheduler.backends.llamacpp import LlamaCppBackend
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.backends.vllm import VLLMBackend

__all__ = ["BACKEND_TYPES", "BackendSpec", "make_backend", "parse_backend_spec"]

BACKEND_TYPES: dict[str, type[SGLangBackend] | type[VLLMBackend] | type[LlamaCppBackend]] = {
    BackendKind.SGLANG.value: SGLangBackend,
    BackendKind.VLLM.value: VLLMBackend,
    BackendKind.LLAMACPP.value: LlamaCppBackend,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _allowed() -> str:
    return ", ".join(sorted(BACKEND_TYPES))


def make_backend(
    kind: str, name: str, base_url: str, http: httpx.AsyncClient, **options: Any
) -> Backend:
    """Build the backend for ``kind``; ``ValueError`` names an unknown kind and the allowed ones.

    ``options`` are the kind's own keyword arguments (vLLM: ``priority_scheduling``,
    ``cached_tokens_in_usage``; llama.cpp: ``capacity_tokens``); one the kind does not take is
    a ``ValueError`` naming it.
    """
    try:
        backend_type = BACKEND_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown backend type {kind!r}; allowed: {_allowed()}") from None
    accepted = set(inspect.signature(backend_type).parameters) - {"name", "base_url", "http"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"backend type {kind!r} takes no option(s) {', '.join(unknown)}")
    return backend_type(name, base_url, http, **options)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One parsed ``--backend`` value."""

    name: str
    kind: str
    url: str


def parse_backend_spec(spec: str) -> BackendSpec:
    """Parse ``[NAME@]KIND=URL``; ``ValueError`` says what is wrong and shows the form."""
    form = "expected [NAME@]KIND=URL, e.g. sglang=http://gpu1:30000"
    text = spec.strip()
    kind_part, sep, url = text.partition("=")
    if not sep or not url:
        raise ValueError(f"invalid backend {spec!r}: {form}")
    name: str | None = None
    if "@" in kind_part:
        name, _, kind_part = kind_part.partition("@")
        if not _NAME_RE.match(name):
            raise ValueError(
                f"invalid backend name {name!r} in {spec!r}: use letters, digits, '.', '_', '-' "
                "(at most 64 characters)"
            )
    kind = kind_part.strip().lower()
    if kind not in BACKEND_TYPES:
        raise ValueError(f"unknown backend type {kind_part!r} in {spec!r}; allowed: {_allowed()}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid backend URL {url!r} in {spec!r}: {form}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in backend URL {url!r}: {exc}") from None
    path = parts.path.rstrip("/")
    if path == "/v1":
        path = ""
    if path or parts.query or parts.fragment:
        raise ValueError(
            f"backend URL {url!r} must be the server root (e.g. http://gpu1:30000), "
            "without a path or query"
        )
    netloc = parts.netloc
    base_url = f"{parts.scheme}://{netloc}"
    if name is None:
        default_port = 443 if parts.scheme == "https" else 80
        name = f"{kind}-{parts.hostname}-{port or default_port}"
    return BackendSpec(name=name, kind=kind, url=base_url)
