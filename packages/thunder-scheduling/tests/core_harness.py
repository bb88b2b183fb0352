"""Test harness for the pure scheduling core: a manual clock and a recording fake driver.

``Harness`` feeds events through the public API only (``make_scheduler``, ``handle``,
``tick``, ``snapshot``) and checks the driver contract on every result: each
``RequestArrived`` gets exactly one ``Admit`` or ``Hold`` at once; a held request gets
exactly one later ``Admit`` unless its program's ``Release`` names it.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from thunder_scheduling import make_scheduler
from thunder_scheduling.commands import Admit, Command, Hold, Pause, Release, Resume
from thunder_scheduling.events import (
    BackendUpdated,
    Event,
    ProgramEnded,
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    RequestOutcome,
    RolloutCut,
    ToolFinished,
    ToolStarted,
)
from thunder_scheduling.snapshot import BackendSnapshot, ProgramSnapshot


class ContractViolation(AssertionError):
    pass


class Harness:
    def __init__(
        self,
        policy: str = "thunder",
        backends: dict[str, int] | None = None,
        page_size_tokens: int = 1,
        **knobs: Any,
    ) -> None:
        self.scheduler = make_scheduler(policy, **knobs)
        self.now = 0.0
        self.pending: dict[str, str] = {}
        """Held request id -> program id."""
        self.in_flight: dict[str, tuple[str, str]] = {}
        """Admitted request id -> (program id, backend)."""
        self.log: list[Command] = []
        self._ids = itertools.count(1)
        self.host_tokens: dict[str, int] = {}
        """Per backend: the host tier its updates report (``host_update``)."""
        for name, capacity in (backends or {"a": 1000}).items():
            self.backend_update(name, capacity, page_size_tokens=page_size_tokens)

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Command]:
        arrived = event.request_id if isinstance(event, RequestArrived) else None
        if arrived is not None:
            self.pending[arrived] = event.program_id
        commands = self.scheduler.handle(event)
        self._check(commands, arrived)
        return commands

    def advance(self, dt: float) -> None:
        self.now += dt

    def tick(self, dt: float = 0.0) -> list[Command]:
        self.now += dt
        commands = self.scheduler.tick(self.now)
        self._check(commands, None)
        return commands

    def backend_update(
        self, name: str, capacity: int, healthy: bool = True, page_size_tokens: int = 1
    ) -> list[Command]:
        return self.feed(BackendUpdated(
            self.now, name, healthy, capacity, page_size_tokens,
            host_capacity_tokens=self.host_tokens.get(name, 0),
        ))

    def host_update(self, name: str, host_tokens: int) -> list[Command]:
        """The backend now reports a host KV tier of ``host_tokens`` (0: none)."""
        self.host_tokens[name] = host_tokens
        b = self.backend(name)
        return self.backend_update(name, b.capacity_tokens, b.healthy, b.page_size_tokens)

    def start(self, pid: str, **kw: Any) -> list[Command]:
        return self.feed(ProgramStarted(self.now, pid, **kw))

    def request(self, pid: str, tokens: int, rid: str | None = None, **kw: Any) -> list[Command]:
        rid = rid or f"{pid}:{next(self._ids)}"
        return self.feed(RequestArrived(self.now, pid, rid, tokens, **kw))

    def last_request(self, pid: str) -> str:
        rids = [r for r, (p, _b) in self.in_flight.items() if p == pid]
        rids += [r for r, p in self.pending.items() if p == pid]
        assert rids, f"no open request of {pid}"
        return rids[-1]

    def finish(
        self,
        pid: str,
        prompt: int | None = None,
        completion: int | None = None,
        cached: int | None = 0,
        rid: str | None = None,
        outcome: RequestOutcome = RequestOutcome.OK,
        tool_call: bool = False,
    ) -> list[Command]:
        rid = rid or self.last_request(pid)
        self.in_flight.pop(rid, None)
        self.pending.pop(rid, None)
        return self.feed(
            RequestFinished(
                self.now,
                pid,
                rid,
                outcome,
                prompt,
                completion,
                cached,
                ends_with_tool_call=tool_call,
            )
        )

    def tool_start(self, pid: str, call: str, name: str = "bash", **kw: Any) -> list[Command]:
        return self.feed(ToolStarted(self.now, pid, call, name, **kw))

    def tool_end(self, pid: str, call: str) -> list[Command]:
        return self.feed(ToolFinished(self.now, pid, call))

    def end(self, pid: str) -> list[Command]:
        return self.feed(ProgramEnded(self.now, pid))

    # -- observing ----------------------------------------------------------------------------

    def program(self, pid: str) -> ProgramSnapshot:
        rows = [p for p in self.scheduler.snapshot().programs if p.program_id == pid]
        assert rows, f"{pid} not in snapshot"
        return rows[-1]

    def backend(self, name: str) -> BackendSnapshot:
        return next(b for b in self.scheduler.snapshot().backends if b.name == name)

    def counters(self) -> Any:
        return self.scheduler.snapshot().counters

    def of(self, kind: type[Any], commands: list[Command] | None = None) -> list[Any]:
        return [c for c in (self.log if commands is None else commands) if isinstance(c, kind)]

    # -- contract ---------------------------------------------------------------------------

    def _check(self, commands: list[Command], arrived: str | None) -> None:
        self.log.extend(commands)
        answered = 0
        for command in commands:
            if isinstance(command, Admit):
                if command.request_id not in self.pending:
                    raise ContractViolation(f"Admit for a request not waiting: {command}")
                self.pending.pop(command.request_id)
                self.in_flight[command.request_id] = (command.program_id, command.backend)
                answered += command.request_id == arrived
            elif isinstance(command, Hold):
                if command.request_id != arrived:
                    raise ContractViolation(f"Hold outside the request's arrival: {command}")
                answered += 1
            elif isinstance(command, Release):
                held = {r for r, p in self.pending.items() if p == command.program_id}
                if set(command.held_request_ids) != held:
                    raise ContractViolation(
                        f"Release names {command.held_request_ids}, held {held}"
                    )
                for rid in held:
                    self.pending.pop(rid)
                for rid in [r for r, (p, _b) in self.in_flight.items() if p == command.program_id]:
                    self.in_flight.pop(rid)
            elif isinstance(command, (Pause, Resume)):
                pass
        if arrived is not None and answered != 1:
            raise ContractViolation(f"request {arrived} answered {answered} times: {commands}")

PIDS = [f"p{i}" for i in range(6)]
"""The program ids the property suites draw from."""

op = st.one_of(  # one step of a random event sequence (see the suites' run())
    st.tuples(st.just("request"), st.sampled_from(PIDS), st.integers(1, 1500)),
    st.tuples(
        st.just("finish"), st.sampled_from(PIDS), st.integers(0, 1500), st.integers(0, 400),
        st.integers(0, 800), st.booleans(),
    ),
    st.tuples(st.just("tool"), st.sampled_from(PIDS), st.sampled_from(["bash", "pytest"]),
              st.one_of(st.none(), st.floats(0.5, 30.0))),
    st.tuples(st.just("tool_end"), st.sampled_from(PIDS)),
    st.tuples(st.just("end"), st.sampled_from(PIDS)),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
    st.tuples(st.just("advance"), st.floats(0.0, 5.0)),
    st.tuples(st.just("health"), st.sampled_from(["b", "c"]), st.booleans()),
    st.tuples(st.just("capacity"), st.sampled_from(["a", "b"]), st.integers(400, 3000)),
    st.tuples(st.just("host"), st.sampled_from(["a", "b", "c"]),
              st.sampled_from([0, 500, 2500, 6000])),
)


class OpPlayer:
    """Plays the suites' ``op`` steps on a ``Harness`` (test support) and tracks what the
    invariants need: the live programs (started, not ended or released), each program's open
    tool calls, and when each held request was held. ``rollout`` names the batch a ``cut`` op
    cuts (without it ``cut`` does nothing)."""

    def __init__(self, h: Harness, page: int, rollout: str | None = None) -> None:
        self.h = h
        self.page = page
        self.rollout = rollout
        self.live: set[str] = set()
        self.tools: dict[str, list[str]] = {}
        self.held_since: dict[str, float] = {}
        self._calls = 0

    def play(self, item: tuple[Any, ...]) -> list[Command]:
        h, kind = self.h, item[0]
        commands: list[Command] = []
        if kind == "request":
            commands = h.request(item[1], item[2])
            self.live.add(item[1])
            for hold in h.of(Hold, commands):
                self.held_since[hold.request_id] = h.scheduler.snapshot().at
        elif kind == "finish":
            open_rids = [r for r, (p, _b) in h.in_flight.items() if p == item[1]]
            if open_rids:
                prompt, completion, cached, usage = item[2], item[3], item[4], item[5]
                if usage:
                    commands = h.finish(item[1], prompt, completion, min(cached, prompt),
                                        rid=open_rids[0])
                else:
                    commands = h.finish(item[1], None, None, None, rid=open_rids[0])
        elif kind == "tool" and item[1] in self.live:
            self._calls += 1
            call = f"c{self._calls}"
            self.tools.setdefault(item[1], []).append(call)
            commands = h.tool_start(item[1], call, item[2], expected_duration_s=item[3])
        elif kind == "tool_end" and self.tools.get(item[1]) and item[1] in self.live:
            commands = h.tool_end(item[1], self.tools[item[1]].pop(0))
        elif kind == "end" and item[1] in self.live:
            commands = h.end(item[1])
            self._gone(item[1])
        elif kind == "tick":
            commands = h.tick(item[1])
        elif kind == "advance":
            h.advance(item[1])
        elif kind == "health":
            commands = h.backend_update(item[1], 1500 if item[1] == "b" else 1000,
                                        healthy=item[2], page_size_tokens=self.page)
        elif kind == "capacity":
            commands = h.backend_update(item[1], item[2], page_size_tokens=self.page)
        elif kind == "host":
            commands = h.host_update(item[1], item[2])
        elif kind == "cut" and self.rollout is not None:
            commands = h.feed(RolloutCut(h.now, self.rollout))
        for release in h.of(Release, commands):
            self._gone(release.program_id)
        return commands

    def _gone(self, program_id: str) -> None:
        self.live.discard(program_id)
        self.tools.pop(program_id, None)
