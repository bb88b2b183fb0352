"""Backend registry and the ``--backend [NAME@]KIND=URL`` parser."""

from __future__ import annotations

import httpx
import pytest

from thunder_scheduler.backends import BACKEND_TYPES, BackendKind, make_backend, parse_backend_spec
from thunder_scheduler.backends.llamacpp import LlamaCppBackend
from thunder_scheduler.backends.sglang import SGLangBackend
from thunder_scheduler.backends.vllm import VLLMBackend


def test_registry_covers_every_kind() -> None:
    assert set(BACKEND_TYPES) == {k.value for k in BackendKind}


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("sglang", SGLangBackend), ("vllm", VLLMBackend), ("llamacpp", LlamaCppBackend)],
)
def test_make_backend(kind: str, cls: type) -> None:
    backend = make_backend(kind, "b", "http://h:1/", httpx.AsyncClient())
    assert isinstance(backend, cls)
    assert backend.kind == kind and backend.name == "b" and backend.base_url == "http://h:1"


def test_unknown_kind_names_allowed_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown backend type 'tgi'; allowed: llamacpp, sglang, vllm"
    ):
        make_backend("tgi", "b", "http://h:1", httpx.AsyncClient())


def test_parse_spec_derives_name() -> None:
    spec = parse_backend_spec("sglang=http://gpu1:30000")
    assert (spec.name, spec.kind, spec.url) == ("sglang-gpu1-30000", "sglang", "http://gpu1:30000")


def test_parse_spec_explicit_name_and_v1_suffix() -> None:
    spec = parse_backend_spec("east@VLLM=https://gpu2:8000/v1/")
    assert (spec.name, spec.kind, spec.url) == ("east", "vllm", "https://gpu2:8000")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://gpu1:30000", "expected \\[NAME@\\]KIND=URL"),
        ("sglang=", "expected \\[NAME@\\]KIND=URL"),
        ("tgi=http://h:1", "unknown backend type 'tgi'.*allowed: llamacpp, sglang, vllm"),
        ("sglang=gpu1:30000", "invalid backend URL"),
        ("sglang=http://h:99999", "invalid port"),
        ("sglang=http://h:1/api", "server root"),
        ("bad name@sglang=http://h:1", "invalid backend name"),
    ],
)
def test_parse_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_backend_spec(text)
