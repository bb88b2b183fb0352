"""Limits of the real app, in process: live programs per client and in all (429 with a
reason), bounded leases and tags, and the key checked before any body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from thunder_testkit.service import engineless_app, in_process_client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _client(**fields: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = engineless_app(**fields)
    async with in_process_client(app) as http:
        yield http


@pytest.fixture
async def capped() -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(max_live_programs_per_key=3, max_live_programs=5):
        yield http


async def test_live_programs_are_capped_per_client(capped: httpx.AsyncClient) -> None:
    for i in range(3):
        started = await capped.post("/v1/programs", json={"program_id": f"a{i}"},
                                    headers=_bearer("alice"))
        assert started.status_code == 201
    refused = await capped.post("/v1/programs", json={"program_id": "a3"},
                                headers=_bearer("alice"))
    assert refused.status_code == 429
    assert "max_live_programs_per_key" in str(refused.json())
    # a live program is never refused, and the proxy refuses a new one for the same client
    assert (await capped.post("/v1/programs", json={"program_id": "a0"},
                              headers=_bearer("alice"))).status_code == 200
    chat = await capped.post("/v1/chat/completions", headers=_bearer("alice") | {
        "X-Thunder-Program-Id": "a-new"}, json={"messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 429 and "max_live_programs_per_key" in chat.text
    # another client has its own share
    assert (await capped.post("/v1/programs", json={"program_id": "b0"},
                              headers=_bearer("bob"))).status_code == 201
    # an ended program frees its place
    assert (await capped.post("/v1/programs/a1/end", json={})).status_code == 200
    assert (await capped.post("/v1/programs", json={"program_id": "a3"},
                              headers=_bearer("alice"))).status_code == 201


async def test_live_programs_are_capped_in_all(capped: httpx.AsyncClient) -> None:
    for i in range(5):
        started = await capped.post("/v1/programs", json={"program_id": f"p{i}"},
                                    headers=_bearer(f"client-{i}"))
        assert started.status_code == 201
    refused = await capped.post("/v1/programs", json={"program_id": "p5"},
                                headers=_bearer("client-5"))
    assert refused.status_code == 429 and "max_live_programs" in refused.text


async def test_leases_and_tags_are_bounded() -> None:
    async for http in _client(max_lease_s=3600, max_tags_bytes=64):
        huge = await http.post("/v1/programs", json={"program_id": "l", "lease_s": 1e308})
        assert huge.status_code == 422 and "max_lease_s" in huge.text
        assert (await http.post("/v1/programs", json={"lease_s": 3600})).status_code == 201
        tags = await http.post("/v1/programs", json={"tags": {"k": "v" * 100}})
        assert tags.status_code == 413 and "max_tags_bytes" in tags.text
        assert (await http.get("/v1/programs")).json()["programs"][0]["program_id"] != "l"


async def test_the_key_is_checked_before_the_body_is_read() -> None:
    async for http in _client(admin_key="admin-secret", api_key="client-secret"):
        for path in ("/v1/programs", "/v1/programs/x/end", "/programs/release"):
            bad = await http.post(path, content=b'{"not json',
                                  headers={"content-type": "application/json"})
            assert bad.status_code == 401, path
        for path in ("/v1/chat/completions", "/generate"):
            bad = await http.post(path, content=b'{"not json')
            assert bad.status_code == 401, path
        assert (await http.get("/v1/models")).status_code == 401
        with_key = await http.post("/v1/programs", content=b'{"not json',
                                   headers=_bearer("admin-secret")
                                   | {"content-type": "application/json"})
        assert with_key.status_code == 400


@pytest.mark.parametrize("depth", [255, 1000, 5000])
async def test_lifecycle_json_nested_too_deep_is_400(depth: int) -> None:
    async for http in _client():
        deep = b"[" * depth + b"]" * depth
        answer = await http.post("/v1/programs", content=b'{"tags": ' + deep + b"}",
                                 headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "nested deeper than 254" in answer.text
        # a string full of brackets is not nesting
        ok = await http.post("/v1/programs", json={"tags": {"k": "[" * 300}})
        assert ok.status_code == 201


async def test_every_error_has_openais_shape() -> None:
    async for http in _client(admin_key="adm", max_body_bytes=200):
        admin = _bearer("adm")
        answers = [
            await http.post("/v1/programs", json={}),                              # 401
            await http.get("/v1/programs/ghost", headers=admin),                  # 404
            await http.post("/v1/programs", json={"priority": "x"}, headers=admin),  # 422
            await http.post("/v1/programs", content=b"{", headers=admin
                            | {"content-type": "application/json"}),             # 400
            await http.post("/v1/programs", json={"tags": {"k": "v" * 500}},
                            headers=admin),                                       # 413
            await http.post("/v1/chat/completions", content=b"{"),                # 400
            await http.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "x"}]}),                 # 503
            await http.get("/no/such/path"),                                      # 404
        ]
        for answer in answers:
            assert answer.status_code >= 400
            error = answer.json()["error"]
            assert set(error) >= {"message", "type", "code"}, answer.text
            assert isinstance(error["message"], str) and error["message"]
            expected = ("authentication_error" if answer.status_code == 401 else
                        "server_error" if answer.status_code >= 500 else
                        "invalid_request_error")
            assert error["type"] == expected, answer.text
