"""kill -9 of the scheduler under load, then a restart on the same state file: the program
table comes back (real processes: ``thunder-scheduler serve`` and two ``thunder-sim serve``).

Sixteen programs of ~6k tokens each share two simulated engines whose KV pools hold 20,000
tokens each, so some run and the rest wait paused, their requests held at the proxy. The
running ones send requests in a loop; the scheduler is SIGKILLed while the held requests are
still waiting. After the restart every program is there exactly once, the running ones on the
engine they ran on, the waiting ones still waiting in the same order, and the lifecycle API
answers for them (view, end).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.scheduler_service import RunningProcess

from thunder_core.launcher import wait_http
from thunder_scheduler.persistence.store import StateStore
from thunder_testkit import until

PROGRAMS = 16
PROMPT = "word " * 6000  # ~6k tokens by the scheduler's estimate and the engine's tokenizer
MODEL = "Qwen/Qwen3-8B"  # the h100-qwen3-8b preset's served name
ADMIN = {"Authorization": "Bearer adm"}

pytestmark = pytest.mark.slow


def _table(url: str) -> dict[str, dict[str, Any]]:
    rows = httpx.get(f"{url}/v1/programs", headers=ADMIN, timeout=10.0).json()["programs"]
    return {r["program_id"]: r for r in rows if r["status"] != "terminated"}


def _essentials(table: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {pid: (r["status"], r["backend"], r["requests"]) for pid, r in table.items()}


def _settled(url: str) -> Callable[[], bool]:
    """A predicate: true once two reads in a row show the same programs in the same state."""
    seen: list[dict[str, tuple[Any, ...]]] = []

    def settled() -> bool:
        seen.append(_essentials(_table(url)))
        return len(seen) > 1 and seen[-1] == seen[-2]

    return settled


def _stored(state: Path) -> dict[str, tuple[Any, ...]]:
    """What a restart would read back from the state file, in ``_essentials`` form."""
    store = StateStore(state)
    try:
        _, programs = store.load()
    finally:
        store.close()
    return {p.program_id: (p.status, p.backend, p.requests) for p in programs
            if p.status != "terminated"}


def _stored_tools(state: Path, program_id: str) -> list[str]:
    """The open tool calls of ``program_id`` in the state file."""
    store = StateStore(state)
    try:
        _, programs = store.load()
    finally:
        store.close()
    return [t.call_id for p in programs if p.program_id == program_id for t in p.tools]


def _chat(url: str, pid: str, stop: threading.Event) -> None:
    body = {"model": MODEL, "max_tokens": 4,
            "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.Client(base_url=url, timeout=120.0,
                      headers={"X-Thunder-Program-Id": pid}) as http:
        while not stop.is_set():
            try:
                http.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return  # the scheduler was killed under us


def _waiting_order(table: dict[str, dict[str, Any]]) -> list[str]:
    paused = [r for r in table.values() if r["status"] == "paused"]
    return [r["program_id"] for r in sorted(paused, key=lambda r: (-r["paused_s"],
                                                                   r["program_id"]))]


def test_kill_9_and_restart_keeps_the_program_table(
    sim_fleet: Callable[..., list[str]],
    scheduler_process: Callable[..., RunningProcess],
    tmp_path: Path,
) -> None:
    engines = sim_fleet(2, time_scale=20.0, extra_args=["--max-total-tokens", "20000"])
    state = tmp_path / "state.sqlite3"
    args = ("--backend", f"e0@sglang={engines[0]}", "--backend", f"e1@sglang={engines[1]}",
            "--admin-key", "adm", "--state-file", str(state), "--state-flush-interval-s",
            "0.05")
    first = scheduler_process(*args)
    wait_http(f"{first.url}/ready", timeout_s=60)
    for i in range(PROGRAMS):
        started = httpx.post(f"{first.url}/v1/programs", headers=ADMIN, timeout=10.0,
                             json={"program_id": f"p{i:02d}", "tags": {"n": str(i)}})
        assert started.status_code == 201
    stop = threading.Event()
    load = [threading.Thread(target=_chat, args=(first.url, f"p{i:02d}", stop), daemon=True)
            for i in range(PROGRAMS)]
    for thread in load:
        thread.start()
    until(lambda: sum(r["requests"] for r in _table(first.url).values()) >= 3 * PROGRAMS // 2,
          timeout_s=60, interval_s=0.1, what="the programs' requests")
    before = _table(first.url)
    assert 0 < len(_waiting_order(before)) < PROGRAMS
    # quiesce the running programs (their loops end after the current request); the paused
    # ones keep a request held at the proxy: the kill comes while they wait
    stop.set()
    until(lambda: sum(t.is_alive() for t in load) <= len(_waiting_order(_table(first.url))),
          timeout_s=60, interval_s=0.1, what="every live program to wait paused")
    until(_settled(first.url), timeout_s=30, interval_s=0.2, what="the program table to settle")
    before = _table(first.url)
    waiting = _waiting_order(before)
    assert waiting
    tooling = next(pid for pid, row in before.items() if row["status"] == "active")
    assert httpx.post(f"{first.url}/v1/programs/{tooling}/tools", headers=ADMIN,
                      json={"call_id": "t1", "tool_name": "pytest"}).status_code == 200
    before = _table(first.url)
    until(lambda: _stored(state) == _essentials(before) and _stored_tools(state, tooling),
          timeout_s=30, interval_s=0.05, what="the program table to be on disk")
    first.process.kill()
    first.process.wait(10)
    for thread in load:
        thread.join(30)

    second = scheduler_process(*args)
    after = _table(second.url)
    assert sorted(after) == sorted(before)  # none lost, none duplicated (one live row each)
    for pid, row in before.items():
        assert after[pid]["tags"] == row["tags"]
        assert after[pid]["requests"] == row["requests"]
        if row["status"] == "active":
            assert (after[pid]["status"], after[pid]["backend"]) == ("active", row["backend"])
    assert _waiting_order(after) == waiting
    assert after[tooling]["current_tool"] == "pytest"  # the open tool call came back too
    assert httpx.post(f"{second.url}/v1/programs/{tooling}/tools/t1/end", headers=ADMIN,
                      json={}).status_code == 200
    # the lifecycle API answers for restored programs, and they keep their engine
    one = waiting[0] if waiting else next(iter(after))
    assert httpx.get(f"{second.url}/v1/programs/{one}", headers=ADMIN).status_code == 200
    active = next(pid for pid, row in before.items() if row["status"] == "active")
    wait_http(f"{second.url}/ready", timeout_s=60)
    done = httpx.post(f"{second.url}/v1/chat/completions", timeout=60.0,
                      headers={"X-Thunder-Program-Id": active},
                      json={"model": MODEL, "max_tokens": 2,
                            "messages": [{"role": "user", "content": PROMPT}]})
    assert done.status_code == 200
    assert _table(second.url)[active]["backend"] == before[active]["backend"]
    ended = httpx.post(f"{second.url}/v1/programs/{active}/end", headers=ADMIN, json={})
    assert ended.json()["status"] == "terminated"
