"""Virtual mode: a discrete-event replay on one virtual clock, with no HTTP.

The scheduler's pure core (``thunder_scheduling.ProgramScheduler`` with any registered
policy) and one ``thunder_sim.engine.Engine`` per replica run in this process. The loop owns
virtual time (modelled seconds) and applies the core's commands exactly as the live driver
does over HTTP: ``Admit`` submits the request to that engine, ``Hold`` parks it until its
``Admit``, ``Pause`` / ``Resume`` / ``Release`` are bookkeeping (and metrics), ``SetPriority``
sets the engine priority of the program's later requests, ``Prewarm`` submits a one-token
prefill of the program's last prompt. The policies run unchanged.

Loop (after Vidur's event loop): two sources of time, the event heap (program actions,
scheduler ticks) and each engine's in-progress iteration. The earliest goes next; on a tie
the engine's iteration ends first (a response is delivered before an arrival at the same
instant). An idle engine with work starts an iteration at once. Decode iterations are
fast-forwarded (``Engine.step(max_decode_steps, until_s)``) up to the next heap event, at most
``fast_forward_s`` modelled seconds: a request submitted to a busy engine waits for the end
of its current (possibly fast-forwarded) iteration, so arrival error is bounded by that
horizon (default 50 ms, a few decode iterations of an 8B model on an H100).

Recompute ledger: the loop keeps every program's phase (``phases.py``) from its own actions
and the scheduler's commands, so each engine attributes every missed prompt token to a cause;
a completed step carries its admission's causes into the report. A ``Resume`` counts as
forced when the command says so (a ``forced`` attribute) or, for cores that do not say, when
the core's ``forced_restores`` counter rose in that call and the program had waited the
aging bound (``config.max_paused_s``).

FTR (``metrics.py``): each root program remembers when its current user turn was sent (its
first step, or a step whose input is a human message); when its last step completes, the
report gets ``first token - turn sent`` and the session's start-to-end time.

Sutradhara's tool levers (``tool_levers.py``, off by default): ``levers.streaming_dispatch``
starts a tool's clock when the engine has produced the call's last argument token;
``levers.prompt_split`` prefills the next prompt's known prefix while the tool runs.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thunder_core.contract import engine_request_id
from thunder_scheduling import SchedulingCore, make_scheduler
from thunder_scheduling.commands import (
    Admit,
    Command,
    Hold,
    Pause,
    Prewarm,
    Release,
    Resume,
    SetPriority,
)
from thunder_scheduling.events import (
    BackendUpdated,
    CacheHintReceived,
    Event,
    ProgramEnded,
    ProgramStarted,
    RequestArrived,
    RequestFinished,
    ToolFinished,
    ToolStarted,
)
from thunder_scheduling.prompt_split import SplitAction, split_action
from thunder_sim.engine import Engine, EngineRequest, FinishReason, StepResult
from thunder_sim.replay.metrics import (
    RunRecorder,
    RunReport,
    StepRecord,
    add_misses,
    add_step_parts,
    ftr_anatomy,
    ordered_misses,
    summarise,
)
from thunder_sim.replay.phases import ProgramPhases
from thunder_sim.replay.player import Action, Call, GapPolicy, Spawn, ToolBegin, ToolEnd, Wait, plan
from thunder_sim.replay.setup import build_engines
from thunder_sim.replay.tool_levers import (
    ToolLevers,
    call_durations,
    known_prefix_blocks,
    tool_call_ends,
)
from thunder_sim.replay.trace import GapKind, TraceProgram, TraceStep, ideal_hit_tokens, instantiate

PROGRAM_LEASE_S = 86_400.0
"""Lease sent with every replayed program. The replay ends each program explicitly; a trace's
tool gaps reach 2,908 s at p99 (trace README), beyond the scheduler's default 30-minute lease,
and a program inside a long tool call is alive, not abandoned."""


@dataclass(frozen=True, slots=True)
class VirtualConfig:
    policy: str = "thunder"
    policy_knobs: dict[str, Any] = field(default_factory=dict)
    preset: str = "h100-qwen3-8b"
    replicas: int = 2
    engine_overrides: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 8
    gaps: GapPolicy = field(default_factory=GapPolicy)
    duration_s: float | None = None     # stop here, recycling sessions to keep slots busy
    fast_forward_s: float = 0.05
    max_decode_steps: int = 256
    check_invariants: bool = False      # validate every engine's KV accounting after each step
    levers: ToolLevers = field(default_factory=ToolLevers)
    label: str = ""
    tool_events: bool = True
    """Report tool calls to the core (``ToolStarted`` / ``ToolFinished``), as an instrumented
    client does through the lifecycle API. False: a plain client that only sends requests (and
    ends its programs), as one written for ThunderAgent's API does."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"--duration-s must be positive, got {self.duration_s}")


@dataclass(eq=False)
class _Run:
    program: TraceProgram
    actions: tuple[Action, ...]
    parent: _Run | None
    idx: int = 0
    children_left: int = 0
    last_blocks: tuple[int, ...] = ()
    last_tokens: int = 0
    last_output_tokens: int = 0
    turn_sent_s: float = 0.0            # when the current user turn's first step was sent
    turn_parts: dict[str, float] = field(default_factory=dict)  # FTR anatomy of this turn
    call_starts: dict[int, float] = field(default_factory=dict)  # streaming: call -> start
    tool_step: int = 0                  # the step whose response called the next tool
    backend: str | None = None          # the engine of its last admission


@dataclass(slots=True)
class _Pending:
    run: _Run
    step: TraceStep
    rid: str
    sent_s: float
    admitted_s: float | None = None     # when the scheduler let it reach an engine


class VirtualReplay:
    def __init__(
        self, programs: Sequence[TraceProgram], config: VirtualConfig, *, fit: str = "",
        on_step: Callable[[], None] | None = None,
        scheduler: SchedulingCore | None = None, engines: dict[str, Engine] | None = None,
    ) -> None:
        if not programs:
            raise ValueError("no sessions to replay (check the context filter)")
        self.config = config
        self.fit = fit
        self.scheduler = scheduler or make_scheduler(config.policy, **config.policy_knobs)
        self.engines = engines or build_engines(
            config.preset, config.replicas, config.engine_overrides)
        self.recorder = RunRecorder()
        self.phases = ProgramPhases()
        self.phases.attach(self.engines)
        config_of = getattr(self.scheduler, "config", None)
        self._aging_bound_s = float(getattr(config_of, "max_paused_s", math.inf))
        self._sessions = list(programs)
        self._next_session = 0
        self._played: list[TraceProgram] = []
        self._on_step = on_step
        self._now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._busy: dict[str, tuple[float, StepResult] | None] = dict.fromkeys(self.engines)
        self._pending: dict[str, _Pending] = {}
        self._priority: dict[str, int] = {}
        self._runs: dict[str, _Run] = {}
        self._tick_at = math.inf
        self._prewarms = 0
        self._held = 0
        self._splits = 0
        self._split_actions: dict[str, int] = {}
        self._watch: dict[str, tuple[str, tuple[int, ...]]] = {}  # rid -> (backend, call ends)
        self._produced: dict[str, int] = {}           # rid -> output tokens so far (watched)
        self._reached: dict[str, int] = {}            # rid -> calls whose end was produced

    # -- loop -----------------------------------------------------------------------------

    def run(self) -> RunReport:
        for name, engine in sorted(self.engines.items()):
            self._feed(backend_updated(name, engine))
        self._begin()
        end = self.config.duration_s if self.config.duration_s is not None else math.inf
        while True:
            self._start_idle_engines()
            t_ev = self._heap[0][0] if self._heap else math.inf
            engine_name, t_eng = self._earliest_engine()
            t = min(t_ev, t_eng)
            if t == math.inf or t > end or self._all_played():
                break
            self._now = t
            if engine_name is not None and t_eng <= t_ev:
                self._finish_iteration(engine_name)
            else:
                heapq.heappop(self._heap)[2]()
        finish = min(end, self._now) if end != math.inf else self._now
        self.recorder.close(finish)
        return self._report(finish)

    # -- workload hooks (closed loop here; ``rollout.py`` plays RL batches through them) ---

    def _begin(self) -> None:
        """Start the first programs: ``concurrency`` sessions."""
        for _ in range(self.config.concurrency):
            if not self._start_next_session():
                break

    def _root_ended(self, run: _Run) -> None:
        """A session (root program) ended: its slot takes the next session."""
        self._start_next_session()

    def _all_played(self) -> bool:
        """Nothing is left to play (a run with ``duration_s`` stops at that time instead)."""
        return (not self._runs and self._next_session >= len(self._sessions)
                and self.config.duration_s is None)

    def _program_tags(self, program: TraceProgram) -> dict[str, str]:
        """The tags sent on the program's ``ProgramStarted`` (none in the closed loop)."""
        return {}

    def _earliest_engine(self) -> tuple[str | None, float]:
        best: str | None = None
        best_t = math.inf
        for name, busy in self._busy.items():
            if busy is not None and busy[0] < best_t:
                best, best_t = name, busy[0]
        return best, best_t

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def _start_idle_engines(self) -> None:
        for name, engine in self.engines.items():
            if self._busy[name] is None and engine.has_work():
                horizon = self._now + self.config.fast_forward_s
                until = min(self._heap[0][0], horizon) if self._heap else horizon
                res = engine.step(self._now, self._decode_cap(name), until)
                if self.config.check_invariants:
                    engine.check_invariants()
                if res.duration_s <= 0 and not res.finished:
                    continue        # nothing schedulable until something changes
                self._busy[name] = (self._now + res.duration_s, res)

    def _finish_iteration(self, name: str) -> None:
        busy = self._busy[name]
        assert busy is not None
        self._busy[name] = None
        if self._watch:
            self._check_watches(busy[1])
        for fin in busy[1].finished:
            pending = self._pending.pop(fin.rid, None)
            if pending is None:
                continue        # a prewarm
            ok = fin.finish_reason is FinishReason.LENGTH
            run = pending.run
            self.phases.request_finished(run.program.program_id)
            self._feed(RequestFinished(
                self._now, run.program.program_id, fin.rid, prompt_tokens=fin.prompt_tokens,
                completion_tokens=fin.completion_tokens, cached_tokens=fin.cached_tokens,
                ends_with_tool_call=run.idx < len(run.actions)
                and isinstance(run.actions[run.idx], ToolBegin)))
            self._unwatch(fin.rid)
            final = pending.step.index == len(run.program.steps) - 1
            if ok and run.parent is None and fin.first_token_s is not None:
                add_step_parts(run.turn_parts, pending.sent_s, pending.admitted_s,
                               fin.first_token_s, None if final else self._now)
            if ok and run.parent is None and final and fin.first_token_s is not None:
                ftr = fin.first_token_s - run.turn_sent_s
                self.recorder.ftr_s.append(ftr)
                self.recorder.ftr_parts.append(ftr_anatomy(run.turn_parts, ftr))
                self.recorder.session_s.append(
                    self._now - self.recorder.born_s.get(run.program.program_id, self._now))
            if ok:
                self.recorder.steps.append(StepRecord(
                    run.program.program_id, pending.step.index, pending.sent_s,
                    fin.first_token_s, self._now, fin.prompt_tokens, fin.cached_tokens,
                    fin.completion_tokens, fin.miss_tokens))
            else:
                self.recorder.failed_steps += 1
            if self._on_step is not None:
                self._on_step()
            self._advance(run)

    # -- scheduler ------------------------------------------------------------------------

    def _forced_so_far(self) -> float:
        counters = getattr(self.scheduler, "counters", None)
        return float(counters.get("forced_restores", 0)) if isinstance(counters, dict) else 0.0

    def _feed(self, event: Event) -> None:
        before = self._forced_so_far()
        commands = self.scheduler.handle(event)
        self._apply(commands, int(self._forced_so_far() - before))

    def _tick(self) -> None:
        self._tick_at = math.inf
        before = self._forced_so_far()
        commands = self.scheduler.tick(self._now)
        self._apply(commands, int(self._forced_so_far() - before))

    def _is_forced(self, cmd: Resume, forced_left: int) -> bool:
        said = getattr(cmd, "forced", None)
        if said is not None:
            return bool(said)
        since = self.recorder.paused_since.get(cmd.program_id)
        return forced_left > 0 and since is not None and (
            self._now - since >= self._aging_bound_s - 1e-9)

    def _apply(self, commands: list[Command], forced_left: int = 0) -> None:
        for cmd in commands:
            if isinstance(cmd, Admit):
                self._admit(cmd)
            elif isinstance(cmd, Hold):
                self._held += 1
            elif isinstance(cmd, Pause):
                self.recorder.paused(cmd.program_id, self._now)
                self.phases.paused_now(cmd.program_id)
            elif isinstance(cmd, Resume):
                forced = self._is_forced(cmd, forced_left)
                forced_left -= int(forced)
                self.phases.resumed(cmd.program_id, forced)
                self.recorder.resumed(cmd.program_id, self._now, cmd.migrated)
            elif isinstance(cmd, SetPriority):
                self._priority[cmd.program_id] = cmd.priority
            elif isinstance(cmd, Prewarm):
                self._prewarm(cmd)
            elif isinstance(cmd, Release):
                self.recorder.released(cmd.program_id, self._now)
                self.phases.resumed(cmd.program_id, forced=False)
                for rid in getattr(cmd, "held_request_ids", ()):
                    pending = self._pending.pop(rid, None)
                    self._unwatch(rid)
                    if pending is not None:
                        self.recorder.failed_steps += 1
                        self._at(self._now, _bind(self._advance, pending.run))
        deadline = self.scheduler.next_deadline()
        if deadline is not None and deadline < self._tick_at:
            self._tick_at = max(deadline, self._now)
            self._at(self._tick_at, self._tick)

    def _admit(self, cmd: Admit) -> None:
        pending = self._pending.get(cmd.request_id)
        if pending is None:
            return
        step = pending.step
        priority = cmd.priority if cmd.priority is not None else self._priority.get(
            cmd.program_id, 0)
        pending.run.backend = cmd.backend
        if pending.admitted_s is None:
            pending.admitted_s = self._now
        if cmd.request_id in self._watch:
            self._watch[cmd.request_id] = (cmd.backend, self._watch[cmd.request_id][1])
        self.engines[cmd.backend].submit(EngineRequest(
            rid=cmd.request_id, prompt_blocks=step.blocks, prompt_tokens=step.prompt_tokens,
            max_new_tokens=step.output_tokens, priority=priority, arrival_s=self._now,
            owner=cmd.program_id), self._now)

    def _prewarm(self, cmd: Prewarm) -> None:
        run = self._runs.get(cmd.program_id)
        if run is None or not run.last_blocks or cmd.backend not in self.engines:
            return
        self._prewarms += 1
        self.engines[cmd.backend].submit(EngineRequest(
            rid=f"{cmd.program_id}:prewarm:{self._prewarms}", prompt_blocks=run.last_blocks,
            prompt_tokens=run.last_tokens, max_new_tokens=1, arrival_s=self._now,
            owner=cmd.program_id), self._now)

    # -- programs -------------------------------------------------------------------------

    def _start_next_session(self) -> bool:
        n = self._next_session
        if n < len(self._sessions):
            program = self._sessions[n]
        elif self.config.duration_s is not None:
            base = self._sessions[n % len(self._sessions)]
            program = instantiate(base, 1 + n, f".r{n // len(self._sessions)}")
        else:
            return False
        self._next_session += 1
        self._played.append(program)
        self._start(program, None)
        return True

    def _start(self, program: TraceProgram, parent: _Run | None) -> None:
        run = _Run(program, plan(program, self.config.gaps), parent)
        self._runs[program.program_id] = run
        self.recorder.started(program.program_id, self._now)
        self._feed(ProgramStarted(
            self._now, program.program_id, framework="replay",
            tags=self._program_tags(program),
            parent_program_id=parent.program.program_id if parent else None,
            lease_s=PROGRAM_LEASE_S))
        self._advance(run)

    def _advance(self, run: _Run) -> None:
        pid = run.program.program_id
        while run.idx < len(run.actions):
            action = run.actions[run.idx]
            run.idx += 1
            if isinstance(action, Call):
                self._call(run, action.step)
                return
            if isinstance(action, Wait):
                capped = action.trace_s - action.duration_s
                if action.kind is GapKind.HUMAN:
                    self.recorder.capped_human_s += capped
                else:
                    self.recorder.capped_tool_s += capped
                end_s = self._now + action.duration_s
                if action.kind is GapKind.TOOL:
                    end_s = self._tool_step_end(run, action.duration_s)
                run.call_starts = {}
                if action.kind is GapKind.TOOL and self.config.levers.prompt_split \
                        and end_s > self._now:
                    self._split(run)
                if end_s > self._now:
                    self._at(end_s, lambda: self._advance(run))
                    return
            elif isinstance(action, ToolBegin):
                self.phases.tool_started(pid)
                if self.config.tool_events:
                    self._feed(ToolStarted(self._now, pid, action.call_id, action.tool_name))
                    if self.config.levers.cache_hints:
                        self._hint_back_in(run)
            elif isinstance(action, ToolEnd):
                self.phases.tool_finished(pid)
                if self.config.tool_events:
                    self._feed(ToolFinished(self._now, pid, action.call_id))
            elif isinstance(action, Spawn):
                run.children_left = len(action.children)
                for child in action.children:
                    self._start(child, run)
                return
        self.phases.ended_now(pid)
        self._feed(ProgramEnded(self._now, pid))
        self._runs.pop(pid, None)
        self.recorder.ended(pid, self._now)
        parent = run.parent
        if parent is not None:
            parent.children_left -= 1
            if parent.children_left == 0:
                self._advance(parent)
        else:
            self._root_ended(run)

    def _call(self, run: _Run, step: TraceStep) -> None:
        pid = run.program.program_id
        rid = engine_request_id(pid, step.index)
        run.last_blocks, run.last_tokens = step.blocks, step.prompt_tokens
        run.last_output_tokens = step.output_tokens
        if step.gap_kind is not GapKind.TOOL:
            run.turn_sent_s = self._now
            run.turn_parts = {}
        run.call_starts = {}
        run.tool_step = step.index
        self._pending[rid] = _Pending(run, step, rid, self._now)
        levers = self.config.levers
        if levers.streaming_dispatch and self._tool_follows(run):
            ends = tool_call_ends(step.output_tokens, levers.trailing_tokens,
                                  levers.parallel_calls)
            if ends[0] < step.output_tokens:
                self._watch[rid] = ("", ends)
                self._produced[rid] = 0
                self._reached[rid] = 0
        self._feed(RequestArrived(
            self._now, pid, rid, prompt_tokens_estimate=step.prompt_tokens,
            max_output_tokens=step.output_tokens, prompt_blocks=step.blocks))

    # -- tool levers (tool_levers.py) -----------------------------------------------------

    @staticmethod
    def _tool_follows(run: _Run) -> bool:
        """The step just sent ends in a tool call that runs for a trace gap (not a spawn)."""
        nxt = run.actions[run.idx:run.idx + 2]
        return len(nxt) == 2 and isinstance(nxt[0], ToolBegin) and isinstance(
            nxt[1], Wait) and nxt[1].kind is GapKind.TOOL

    def _hint_back_in(self, run: _Run) -> None:
        """The adapter's ``back_in`` hint for the tool step that just started: its duration
        (``tool_levers.py``: cache hints)."""
        nxt = run.actions[run.idx] if run.idx < len(run.actions) else None
        if isinstance(nxt, Wait) and nxt.kind is GapKind.TOOL and nxt.duration_s > 0:
            self._feed(CacheHintReceived(self._now, run.program.program_id, "back_in",
                                         seconds=nxt.duration_s))

    def _decode_cap(self, name: str) -> int:
        """Decode iterations the engine may fast-forward: never past a watched request's
        tool-call end (every running request gains one token per decode iteration)."""
        cap = self.config.max_decode_steps
        for rid, (backend, ends) in self._watch.items():
            if backend == name:
                cap = min(cap, max(1, ends[self._reached[rid]] - self._produced[rid]))
        return cap

    def _check_watches(self, res: StepResult) -> None:
        for prog in res.progress:
            watch = self._watch.get(prog.rid)
            if watch is None:
                continue
            self._produced[prog.rid] += prog.new_tokens
            ends, reached = watch[1], self._reached[prog.rid]
            pending = self._pending.get(prog.rid)
            while reached < len(ends) and self._produced[prog.rid] >= ends[reached]:
                if pending is not None:
                    pending.run.call_starts[reached] = self._now
                reached += 1
            self._reached[prog.rid] = reached
            if reached == len(ends) or ends[reached] >= pending_output(pending):
                self._unwatch(prog.rid)

    def _unwatch(self, rid: str) -> None:
        self._watch.pop(rid, None)
        self._produced.pop(rid, None)
        self._reached.pop(rid, None)

    def _tool_step_end(self, run: _Run, gap_s: float) -> float:
        """When the tool step that starts now ends: its calls run ``call_durations``, each
        from its start (streaming dispatch: when its last argument token was produced; else
        now, the response's end)."""
        durations = call_durations(gap_s, self.config.levers.parallel_calls, run.tool_step)
        return max([self._now, *(run.call_starts.get(j, self._now) + d
                                  for j, d in enumerate(durations))])

    def _split(self, run: _Run) -> None:
        """Prefill the next prompt's known prefix on the program's engine (prefill-only, lowest
        priority) while its tool runs, as ``thunder_scheduling.prompt_split`` decides (the
        replay knows what its engine caches: the uncached part is exact)."""
        pid = run.program.program_id
        nxt = next((a.step for a in run.actions[run.idx:] if isinstance(a, Call)), None)
        engine = self.engines.get(run.backend) if run.backend is not None else None
        if nxt is None or engine is None:
            return
        blocks = known_prefix_blocks(nxt.blocks, nxt.prompt_tokens, run.last_tokens,
                                     run.last_output_tokens, run.program.block_tokens)
        if not blocks:
            return
        missing = len(blocks) - engine.memory.cache.match_len(blocks)
        room = getattr(self.scheduler, "split_room", None)
        action = split_action(
            paused=pid in self.phases.paused, cached=missing == 0,
            uncached_tokens=missing * run.program.block_tokens,
            room=room(pid, self._now) if room is not None else None)
        self._split_actions[action.value] = self._split_actions.get(action.value, 0) + 1
        if action is not SplitAction.SENT:
            return
        self._splits += 1
        low = 1 if engine.config.schedule_low_priority_values_first else -1
        engine.submit(EngineRequest(
            rid=f"{pid}:split:{self._splits}", prompt_blocks=blocks,
            prompt_tokens=len(blocks) * run.program.block_tokens, max_new_tokens=0,
            priority=low * (2**31 - 1), arrival_s=self._now, owner=pid), self._now)

    # -- report ---------------------------------------------------------------------------

    def _scheduler_counters(self) -> dict[str, float]:
        """The core's own counters (forced restores, its max paused time), when it has them."""
        counters = getattr(self.scheduler, "counters", None)
        if not isinstance(counters, dict):
            return {}
        return {f"scheduler_{k}": v for k, v in counters.items()
                if k in ("forced_restores", "max_paused_s", "restores", "marks", "prewarms")}

    def _report(self, duration_s: float) -> RunReport:
        cfg = self.config
        return summarise(
            self.recorder, label=cfg.label or f"{cfg.policy} x{cfg.concurrency}",
            mode="virtual", policy=cfg.policy, replicas=cfg.replicas,
            concurrency=cfg.concurrency, duration_s=duration_s,
            recomputed_tokens=sum(e.counters.recomputed_tokens for e in self.engines.values()),
            ideal=ideal_hit_tokens(self._played), fit=self.fit,
            extra={"prewarms": self._prewarms, "held_requests": self._held,
                   "prompt_splits": self._splits, "levers": cfg.levers.name,
                   "split_actions": dict(sorted(self._split_actions.items())),
                   "retractions": sum(e.counters.num_retracted_reqs
                                      for e in self.engines.values()),
                   "kv_pool_tokens": next(iter(self.engines.values())).capacity_tokens,
                   "engine_miss_tokens": _sum_dicts(
                       e.counters.miss_tokens for e in self.engines.values()),
                   **engine_time(self.engines.values(), duration_s),
                   **self._scheduler_counters()},
        )


def backend_updated(name: str, engine: Engine, at: float = 0.0) -> BackendUpdated:
    """What the backend monitor reports for ``engine``: its device pool and, with HiCache on,
    its host pool and load-back rate (link bandwidth / KV bytes per token)."""
    cfg = engine.config
    host = cfg.host_pool_tokens if cfg.enable_hierarchical_cache else 0
    rate = (cfg.host_device_bytes_per_s / cfg.kv_bytes_per_token
            if host and cfg.kv_bytes_per_token > 0 else None)
    return BackendUpdated(at, name, True, engine.capacity_tokens, cfg.page_tokens,
                          host_capacity_tokens=host, host_load_tokens_per_s=rate)


def engine_time(engines: Iterable[Engine], duration_s: float) -> dict[str, float]:
    """Where the engines' time went: shares of prefill, decode and idle (engine-seconds over
    ``engines x duration_s``), the time-weighted mean decode batch and the mean context of a
    decoding request. A decode iteration reads every running request's KV, so its cost per
    output token is about (weights + batch context) / batch: a larger batch amortises the
    weights, and KV held by programs in tools is memory no decoding request can use."""
    engines = list(engines)
    total = len(engines) * duration_s
    prefill = sum(e.counters.prefill_s for e in engines)
    decode = sum(e.counters.decode_s for e in engines)
    batch = sum(e.counters.decode_batch_s for e in engines)
    context = sum(e.counters.decode_context_s for e in engines)
    if total <= 0:
        return {}
    return {"prefill_share": round(prefill / total, 4), "decode_share": round(decode / total, 4),
            "idle_share": round(max(0.0, 1 - (prefill + decode) / total), 4),
            "decode_batch_mean": round(batch / decode, 2) if decode else 0.0,
            "decode_context_per_request": round(context / batch) if batch else 0}


def _sum_dicts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        add_misses(out, d)
    return ordered_misses(out)


def pending_output(pending: _Pending | None) -> int:
    """The output tokens of a watched request (0 when it is gone: stop watching)."""
    return pending.step.output_tokens if pending is not None else 0


def _bind(fn: Callable[[_Run], None], run: _Run) -> Callable[[], None]:
    return lambda: fn(run)
