"""Rollout endpoints of the real app, in process (``rollout_api.py``): open a batch with its
size, watch it drain, cut what is left; bad input is a 4xx with a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from thunder_core.contract import ROLLOUT_GROUP_TAG, ROLLOUT_SAMPLE_TAG, ROLLOUT_TAG, Paths
from thunder_testkit.service import engineless_app, in_process_client

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = engineless_app()
    async with in_process_client(app) as http:
        yield http


async def _start_members(client: httpx.AsyncClient, batch: str, n: int) -> list[str]:
    ids = [f"{batch}-g0-s{j}" for j in range(n)]
    for j, pid in enumerate(ids):
        answer = await client.post(Paths.PROGRAMS, json={"program_id": pid, "tags": {
            ROLLOUT_TAG: batch, ROLLOUT_GROUP_TAG: "0", ROLLOUT_SAMPLE_TAG: str(j)}})
        assert answer.status_code == 201, answer.text
    return ids


async def test_open_a_batch_watch_it_and_cut_the_rest(client: httpx.AsyncClient) -> None:
    opened = await client.post(Paths.ROLLOUTS, json={"rollout": "step-1", "size": 4})
    assert opened.status_code == 201, opened.text
    assert opened.json()["num_programs"] == 4 and opened.json()["live_program_ids"] == []
    ids = await _start_members(client, "step-1", 4)
    await client.post(f"/v1/programs/{ids[0]}/end", json={})
    view = (await client.get("/v1/rollouts/step-1")).json()
    assert (view["num_ended"], view["draining"]) == (1, False)
    assert view["live_program_ids"] == ids[1:]
    await client.post(f"/v1/programs/{ids[1]}/end", json={})
    await client.post(f"/v1/programs/{ids[2]}/end", json={})
    assert (await client.get("/v1/rollouts/step-1")).json()["draining"] is True

    cut = await client.post("/v1/rollouts/step-1/cut")
    assert cut.status_code == 200, cut.text
    assert cut.json()["cut_program_ids"] == [ids[3]]
    assert cut.json()["live_program_ids"] == []
    ended = (await client.get(f"/v1/programs/{ids[3]}")).json()
    assert ended["status"] == "terminated" and ended["end_status"] == "cancelled"


async def test_a_cut_fraction_cuts_the_batch_by_itself(client: httpx.AsyncClient) -> None:
    answer = await client.post(Paths.ROLLOUTS, json={
        "rollout": "b", "size": 4, "cut_fraction": 0.5})
    assert answer.status_code == 201
    ids = await _start_members(client, "b", 4)
    for pid in ids[:2]:
        await client.post(f"/v1/programs/{pid}/end", json={})
    view = (await client.get("/v1/rollouts/b")).json()
    assert view["cut_program_ids"] == ids[2:] and view["live_program_ids"] == []


async def test_opening_a_batch_again_updates_it(client: httpx.AsyncClient) -> None:
    await _start_members(client, "c", 2)     # the first tagged program opened it
    answer = await client.post(Paths.ROLLOUTS, json={"rollout": "c", "size": 8})
    assert answer.status_code == 200 and answer.json()["num_programs"] == 8


@pytest.mark.parametrize(("body", "field"), [
    ({"rollout": "x", "size": 0}, "size"),
    ({"rollout": "x", "size": "many"}, "size"),
    ({"rollout": "x", "cut_fraction": 0}, "cut_fraction"),
    ({"rollout": "x", "cut_fraction": 1.5}, "cut_fraction"),
    ({"rollout": "a b"}, "rollout"),
    ({"rollout": ""}, "rollout"),
    ({"size": 3}, "rollout"),
    ({"rollout": "x", "sizes": 3}, "sizes"),
])
async def test_bad_input_is_a_4xx_naming_the_field(
        client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    answer = await client.post(Paths.ROLLOUTS, json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert (await client.get("/v1/rollouts/x")).status_code == 404  # nothing was opened


async def test_an_unknown_batch_is_404_with_a_reason(client: httpx.AsyncClient) -> None:
    for answer in (await client.get("/v1/rollouts/nope"),
                   await client.post("/v1/rollouts/nope/cut")):
        assert answer.status_code == 404
        assert "unknown rollout 'nope'" in answer.json()["error"]["message"]


async def test_rollout_endpoints_need_the_admin_key() -> None:
    app = engineless_app(admin_key="admin-secret")
    async with in_process_client(app) as http:
        refused = await http.post(Paths.ROLLOUTS, json={"rollout": "k", "size": 2})
        assert refused.status_code == 401
        allowed = await http.post(Paths.ROLLOUTS, json={"rollout": "k", "size": 2},
                                  headers=ADMIN)
        assert allowed.status_code == 201
        assert (await http.get("/v1/rollouts/k")).status_code == 401
