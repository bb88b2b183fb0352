"""One simulated SGLang engine: continuous batching over a paged KV pool with a radix cache.

Pure: no I/O, no clock reads; ``now`` is passed in and ``step`` returns the modelled duration.
It follows SGLang 0.5.23's scheduler (``sglang/srt/managers/scheduler.py``,
``schedule_policy.py``, ``schedule_batch.py``) with prefill and decode in separate iterations
(the default, no ``--enable-mixed-chunk``):

1. Prefill first (``get_new_batch_prefill``): the in-progress chunked request gets the next
   chunk, then waiting requests are admitted in queue order (FCFS; with priority scheduling
   sorted by ``(priority, arrival)``, higher first unless low-values-first) while the batch has
   room (``max_running_requests``, ``chunked_prefill_size``, ``max_prefill_tokens``) and
   memory: ``PrefillAdder.add_one_req`` admits when
   ``ceil_page(extend) + min(max_new, 4096) < free + evictable - reserved``, where
   ``reserved = new_token_ratio * sum(min(remaining_new, 4096))`` over running requests; the
   first refusal stops admission. The last admitted request may be chunked (chunk end aligned
   to a page). After each chunk the prompt's whole blocks go into the radix tree, locked by
   the request (``cache_unfinished_req``). A prefill that completes samples the first token.
2. Otherwise decode every running request one token. Pages needed by the step are taken
   from free memory, then by evicting unlocked cache; if that is not enough, ``retract_decode``:
   requests are ordered by ``(len(output_ids), -len(origin_input_ids))`` (with
   ``--retraction-policy priority``, priority first) and retracted from the low end (fewest
   output tokens, longest prompt first) until the step fits, at least one and keeping one; each
   retracted request frees its KV (its cached prompt blocks stay in the tree, unlocked), the
   tree evicts ``remaining * SGLANG_RETRACT_DECODE_STEPS`` tokens at once (``release_req``),
   and it is queued again to re-prefill prompt + output, counted in ``recomputed_tokens``.
   ``new_token_ratio`` decays each decode step and is re-estimated after a retraction
   (``NewTokenRatioTracker``); it resets when the engine idles.
3. A finished request unlocks its path; its prompt blocks stay cached (LRU-evictable); its
   own pages (partial last block, output) are freed. Outputs are never inserted: their keys
   never match a later prompt.

Every admission's missed prompt tokens are attributed to a cause by the recompute ledger
(``ledger.py``; instrumentation, no decision depends on it): ``attribute_with`` plugs in what
the caller knows about programs; ``counters.miss_tokens`` holds the totals and each
``FinishedRequest.miss_tokens`` its last admission's.

HiCache (``--enable-hierarchical-cache``, ``host_cache.py``): off by default. When on, the
radix cache gets a host tier; an admission whose device match continues in host memory loads
those blocks back (they count as cached tokens, as in SGLang), and the prefill that follows
pays for the transfer, overlapped layer by layer with its compute
(``host_cache.overlapped_time_s``). ``counters.load_back_tokens`` / ``load_back_s`` count it.

Deviation, to never deadlock: when nothing runs and the head request's prompt fits the pool
but the output reservation does not, it is admitted anyway (decode retracts or aborts later,
as SGLang aborts a lone request that outgrows the pool); if even its prompt cannot fit
(sessions pin the rest), it is aborted.

``step(now, max_decode_steps=k, until_s=t)`` fast-forwards: after the first iteration it runs
further pure-decode iterations while no prefill could be scheduled, nothing finished or was
retracted, and the elapsed time stays below ``until_s``; durations add exactly as single steps.
Cost: O(batch) per *segment* (a run of iterations over an unchanged batch that allocates only
free pages, see ``_decode``), O(1) scalar work per iteration; an iteration that must evict or
retract runs the per-request path (``_decode_core``).
"""

from __future__ import annotations

import math
from collections import deque

from thunder_sim.costmodel.base import CostModel, PrefillChunk
from thunder_sim.engine.config import EngineConfig
from thunder_sim.engine.host_cache import HostCache, overlapped_time_s
from thunder_sim.engine.kv_pool import KVPool
from thunder_sim.engine.ledger import RETRACTION_EVICTOR, Attribution
from thunder_sim.engine.memory import KVMemory
from thunder_sim.engine.radix_cache import RadixCache, RadixNode
from thunder_sim.engine.request_state import ReqState
from thunder_sim.engine.types import (
    EngineCounters,
    EngineRequest,
    FinishedRequest,
    FinishReason,
    LoadSnapshot,
    StepResult,
    TokenProgress,
)


class Engine:
    def __init__(self, config: EngineConfig, cost: CostModel) -> None:
        self.config = config
        self.cost = cost
        self._page = config.page_tokens
        host = None
        if config.enable_hierarchical_cache:
            host = HostCache(config.host_pool_tokens, config.page_tokens,
                             config.hicache_write_policy)
        self.memory = KVMemory(KVPool(config.kv_pool_tokens, config.page_tokens),
                               RadixCache(config.eviction_policy), host)
        self.counters = EngineCounters()
        self.counters.miss_tokens = self.memory.ledger.totals
        self._waiting: list[ReqState] = []
        self._running: list[ReqState] = []
        self._chunked: ReqState | None = None
        self._live: dict[str, ReqState] = {}
        self._sessions: dict[str, RadixNode | None] = {}
        self._seq = 0
        self._ctx_tokens = 0            # sum of kv_tokens over running requests
        ratio_init = config.new_token_ratio_init
        self._ratio_init = ratio_init
        self._ratio_min = min(ratio_init * config.new_token_ratio_min_factor, 1.0)
        self._ratio_decay = (ratio_init - self._ratio_min) / config.new_token_ratio_decay_steps
        self._ratio = ratio_init
        self._now = 0.0
        self._gen_window: deque[tuple[float, int]] = deque()
        self._gen_window_tokens = 0
        self._head_need_cache: tuple[tuple[int, int, int], int] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def capacity_tokens(self) -> int:
        return self.memory.pool.capacity_tokens

    def attribute_with(self, attribution: Attribution) -> None:
        """Let the recompute ledger ask ``attribution`` about programs and other engines."""
        self.memory.ledger.attribution = attribution

    def submit(self, req: EngineRequest, now: float) -> None:
        """Queue a request. Raises ValueError on a malformed request, a duplicate rid, an
        unknown session, or a prompt the pool can never hold."""
        p = self._page
        if req.rid in self._live:
            raise ValueError(f"request id {req.rid!r} is already in the engine")
        if req.prompt_tokens < 1:
            raise ValueError("prompt_tokens must be >= 1")
        if req.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if len(req.prompt_blocks) != -(-req.prompt_tokens // p):
            raise ValueError(
                f"{len(req.prompt_blocks)} prompt blocks do not cover {req.prompt_tokens} tokens "
                f"in blocks of {p} (need {-(-req.prompt_tokens // p)})")
        if req.prompt_tokens + 1 > self.capacity_tokens:
            raise ValueError(f"prompt of {req.prompt_tokens} tokens exceeds the KV pool "
                             f"({self.capacity_tokens} tokens)")
        if req.session_id is not None and req.session_id not in self._sessions:
            raise ValueError(f"session {req.session_id!r} is not open")
        self._now = max(self._now, now)
        st = ReqState(req, p, self._seq)
        self._seq += 1
        self._live[req.rid] = st
        self._waiting.append(st)
        self.memory.ledger.request_entered(req.owner)
        self.counters.num_requests += 1

    def abort(self, rid: str, now: float) -> FinishedRequest | None:
        st = self._live.get(rid)
        if st is None:
            return None
        self._now = max(self._now, now)
        if st is self._chunked:
            self._chunked = None
        elif st in self._running:
            self._running.remove(st)
            self._ctx_tokens -= st.kv_tokens
        else:
            self._waiting.remove(st)
        self.counters.num_aborted_reqs += 1
        return self._finish(st, now, FinishReason.ABORT)

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._chunked is not None)

    def step(
        self, now: float, max_decode_steps: int = 1, until_s: float | None = None
    ) -> StepResult:
        """One iteration (or up to ``max_decode_steps`` pure-decode iterations, see module doc)."""
        if max_decode_steps < 1:
            raise ValueError("max_decode_steps must be >= 1")
        self._now = max(self._now, now)
        if not self.has_work():
            self._ratio = self._ratio_init
            return StepResult(duration_s=0.0)
        plan = self._schedule_prefill(now)
        if isinstance(plan, StepResult):
            return plan
        if plan:
            return self._run_prefill(plan, now)
        if self._running:
            return self._decode(now, max_decode_steps, until_s)
        return StepResult(duration_s=0.0)

    def flush_cache(self) -> bool:
        """Drop the whole radix cache (and session pins); refused while any request is queued
        or running, as SGLang's ``flush_cache``."""
        if self.has_work():
            return False
        for sid, node in self._sessions.items():
            if node is not None:
                self.memory.cache.unlock(node)
            self._sessions[sid] = None
        freed = self.memory.cache.reset()
        self.memory.pool.free(freed)
        self.memory.ledger.evicted.clear()   # what was evicted before is gone with the rest
        if self.memory.host is not None:
            self.memory.host.clear()
        return True

    def open_session(self, session_id: str) -> bool:
        """Open an SGLang session; False if it is already open."""
        if session_id in self._sessions:
            return False
        self._sessions[session_id] = None
        return True

    def close_session(self, session_id: str) -> bool:
        """Close a session and unpin its KV; False if it is not open."""
        if session_id not in self._sessions:
            return False
        node = self._sessions.pop(session_id)
        if node is not None:
            self.memory.cache.unlock(node)
        return True

    def load(self) -> LoadSnapshot:
        pool = self.memory.pool
        c = self.counters
        self._trim_gen_window()
        host = self.memory.host
        if host is not None:
            c.hicache_backup_tokens = host.backup_tokens
        return LoadSnapshot(
            num_running_reqs=len(self._running) + (1 if self._chunked is not None else 0),
            num_waiting_reqs=len(self._waiting),
            num_used_tokens=pool.used_tokens,
            max_total_num_tokens=pool.capacity_tokens,
            token_usage=pool.used_tokens / pool.capacity_tokens,
            cache_hit_rate=c.cached_tokens / c.prompt_tokens if c.prompt_tokens else 0.0,
            gen_throughput=self._gen_window_tokens / self.config.gen_throughput_window_s,
            hicache_host_used_tokens=host.used_tokens if host is not None else 0,
            hicache_host_total_tokens=host.capacity_tokens if host is not None else 0,
        )

    def check_invariants(self) -> None:
        """Raise AssertionError if KV accounting is inconsistent or over capacity."""
        states = list(self._running)
        if self._chunked is not None:
            states.append(self._chunked)
        self.memory.check(states)
        if any(s.own_pages or s.node is not None for s in self._waiting):
            raise AssertionError("a waiting request holds KV")

    # ------------------------------------------------------------------ scheduling

    def _reserved_tokens(self) -> float:
        clip = self.config.clip_max_new_tokens
        return self._ratio * sum(min(s.remaining_new_tokens, clip) for s in self._running)

    def _queue_order(self) -> list[ReqState]:
        if self.config.enable_priority_scheduling:
            sign = 1 if self.config.schedule_low_priority_values_first else -1
            self._waiting.sort(key=lambda s: (s.req.priority * sign, s.seq))
        return self._waiting

    def _admission_need(self, st: ReqState, matched_blocks: int) -> tuple[int, int]:
        """(extend tokens, tokens the admission check asks for)."""
        p = self._page
        extend = st.req.prompt_tokens + st.output_tokens - matched_blocks * p
        need = -(-extend // p) * p + min(st.remaining_new_tokens, self.config.clip_max_new_tokens)
        return extend, need

    def _head_need(self) -> int:
        """Tokens the admission check asks for the head of the queue (cached per head state
        and radix version: the match is the only non-O(1) part)."""
        head = self._queue_order()[0]
        key = (head.seq, head.output_tokens, self.memory.cache.version)
        cached = self._head_need_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        matched = self.memory.cache.match_len(head.req.prompt_blocks[: head.whole_blocks])
        need = self._admission_need(head, matched)[1]
        self._head_need_cache = (key, need)
        return need

    def _schedule_prefill(self, now: float) -> list[tuple[ReqState, int]] | StepResult:
        cfg = self.config
        if self._chunked is None and (
                not self._waiting or len(self._running) >= cfg.max_running_requests):
            return []           # nothing to admit (the loop below would stop at once)
        p = self._page
        mem = self.memory
        plan: list[tuple[ReqState, int]] = []
        rem_chunk = cfg.chunked_prefill_size
        rem_input = cfg.max_prefill_tokens
        avail_pages = mem.pool.free_pages + mem.cache.evictable_blocks
        rem_total = mem.available_tokens() - self._reserved_tokens()
        slots = cfg.max_running_requests - len(self._running)
        ch = self._chunked
        if ch is not None:
            remaining = ch.target_tokens - ch.kv_tokens
            rem_total -= remaining + min(ch.remaining_new_tokens, cfg.clip_max_new_tokens)
            e = self._chunk_len(ch, remaining, rem_chunk, avail_pages)
            slots -= 1
            if e <= 0:
                if not self._running:   # cannot progress and nothing will free memory
                    self._chunked = None
                    return self._stuck_abort(ch, now)
                return plan
            plan.append((ch, e))
            avail_pages -= mem.pages_to_grow(ch, e)
            rem_chunk -= e
            rem_input -= e
            if e < remaining:
                return plan
        admitted = 0
        for st in self._queue_order():
            if slots <= 0 or rem_chunk < p or rem_input <= 0:
                break
            matched = mem.cache.match_len(st.req.prompt_blocks[: st.whole_blocks])
            extend, need = self._admission_need(st, matched)
            alone = not plan and not self._running and ch is None
            if need >= rem_total and not (alone and -(-extend // p) <= avail_pages):
                if alone:
                    self._waiting.pop(0)
                    return self._stuck_abort(st, now)
                break
            room_before = mem.pool.free_pages + mem.cache.evictable_blocks
            mem.ledger.evictor = st.req.owner      # a load-back may evict
            cached = mem.attach_prefix(st, avail_pages)
            # Locking the matched prefix (and pages loaded back from host) removes it from what
            # is available: re-check with it. Loaded pages are part of ``need`` already.
            loaded_pages = st.load_tokens // p
            newly_locked = room_before - mem.pool.free_pages - mem.cache.evictable_blocks
            if loaded_pages:
                extend -= st.load_tokens
            e = self._chunk_len(st, extend, rem_chunk, avail_pages - newly_locked)
            if avail_pages - newly_locked < 0 or (e <= 0 < extend) or (
                    not alone and need + (newly_locked - loaded_pages) * p >= rem_total):
                mem.release(st)
                if alone:   # nothing runs and pinned KV leaves no room: it can never start
                    self._waiting.pop(0)
                    return self._stuck_abort(st, now)
                break
            avail_pages -= newly_locked
            rem_total -= need + (newly_locked - loaded_pages) * p
            st.target_tokens = st.req.prompt_tokens + st.output_tokens
            st.cached_tokens = cached
            if st.admissions:
                st.recomputed_tokens += extend
                self.counters.recomputed_tokens += extend
            st.miss_tokens = mem.ledger.admitted(
                st.req.prompt_blocks, st.req.prompt_tokens, st.tree_blocks, st.whole_blocks,
                readmission=st.admissions > 0)
            st.admissions += 1
            admitted += 1
            slots -= 1
            plan.append((st, e))
            avail_pages -= mem.pages_to_grow(st, e)
            rem_chunk -= e
            rem_input -= e
            if e < extend:
                self._chunked = st
                break
        if admitted:
            del self._waiting[:admitted]
        return plan

    def _chunk_len(self, st: ReqState, remaining: int, rem_chunk: int, avail_pages: int) -> int:
        """Tokens of ``st`` to prefill now: all of ``remaining`` if it fits the chunk budget and
        memory, else a chunk whose end is page-aligned (SGLang's truncation)."""
        p = self._page
        own_cap = (st.own_pages + max(avail_pages, 0) + st.tree_blocks) * p - st.kv_tokens
        limit = min(rem_chunk, own_cap)
        if remaining <= limit:
            return remaining
        return max((st.kv_tokens + limit) // p * p - st.kv_tokens, 0)

    def _stuck_abort(self, st: ReqState, now: float) -> StepResult:
        self.counters.num_aborted_reqs += 1
        return StepResult(duration_s=0.0, finished=(self._finish(st, now, FinishReason.ABORT),))

    # ------------------------------------------------------------------ execution

    def _run_prefill(self, plan: list[tuple[ReqState, int]], now: float) -> StepResult:
        mem = self.memory
        chunks: list[PrefillChunk] = []
        load_tokens = mem.load_pending_tokens     # loaded back by this plan's admissions
        mem.load_pending_tokens = 0
        for st, e in plan:
            mem.ledger.evictor = st.req.owner
            ok = mem.ensure_free(mem.pages_to_grow(st, e))
            assert ok, "prefill plan exceeded memory"
            chunks.append(PrefillChunk(st.kv_tokens, e))
            mem.grow(st, e)
            mem.cache_prompt(st)
        duration = self.cost.prefill_time_s(chunks)
        if load_tokens:
            cfg = self.config
            load_s = load_tokens * cfg.kv_bytes_per_token / cfg.host_device_bytes_per_s
            duration = overlapped_time_s(duration, load_s, cfg.num_layers)
            self.counters.load_back_tokens += load_tokens
            self.counters.load_back_s += load_s
        self.counters.prefill_s += duration
        end = now + duration
        progress: list[TokenProgress] = []
        finished: list[FinishedRequest] = []
        for st, _e in plan:
            if not st.prefill_done:
                continue
            if st is self._chunked:
                self._chunked = None
            if st.remaining_new_tokens > 0:
                st.output_tokens += 1
                first = st.first_token_s is None
                if first:
                    st.first_token_s = end
                    self.counters.ttft_s.append(end - st.req.arrival_s)
                progress.append(TokenProgress(st.rid, 1, first))
            if st.remaining_new_tokens <= 0:
                finished.append(self._finish(st, end, FinishReason.LENGTH))
            else:
                self._running.append(st)
                self._ctx_tokens += st.kv_tokens
        self._record_generation(end, len(progress))
        return StepResult(duration_s=duration, prefill_tokens=sum(c.extend_tokens for c in chunks),
                          progress=tuple(progress), finished=tuple(finished))

    def _decode(self, now: float, max_iters: int, until_s: float | None) -> StepResult:
        """Up to ``max_iters`` decode iterations, the first unconditionally, each later one only
        while ``now + elapsed < until_s`` and no prefill could be scheduled.

        Runs in *segments* over a fixed batch: between two changes of the batch nothing that
        the per-request state feeds into changes except by +1 token per request per iteration,
        so a segment needs no per-request loop per iteration. Per request, once per segment:
        its next page boundary (a histogram over ``kv_tokens mod page`` gives the pages each
        iteration allocates) and its remaining tokens (the segment ends at the first finish).
        Per iteration, scalars only, in the same order and with the same float operations as
        ``_decode_core``: the stop checks, the page allocation from free memory, the
        ``new_token_ratio`` decay, the roofline duration of ``(batch, context)`` and the
        context growth by the batch size. An iteration whose pages are not free (it must evict
        or retract) ends the segment and runs through ``_decode_core``. So the result equals
        ``max_iters`` single steps exactly, floats included."""
        p = self._page
        pool = self.memory.pool
        counters = self.counters
        decode_time = self.cost.decode_time_s
        window = self._gen_window
        decay, ratio_min = self._ratio_decay, self._ratio_min
        limit_s = math.inf if until_s is None else until_s
        duration = 0.0
        iters = 0
        tokens: dict[str, int] = {}
        finished: list[FinishedRequest] = []
        retracted: list[str] = []
        while iters < max_iters and self._running:
            running = self._running
            n = len(running)
            boundary = [0] * p          # requests whose next page starts i iterations ahead
            last = max_iters - iters    # the segment's last possible iteration
            for s in running:
                boundary[-s.kv_tokens % p] += 1
                rem = s.req.max_new_tokens - s.output_tokens
                last = min(last, rem)
            check = self._prefill_check()
            free = pool.free_pages
            ctx = self._ctx_tokens
            ratio = self._ratio
            gen = 0
            j = 0
            seg_s = seg_ctx_s = 0.0
            stop = slow = False
            while j < last:
                if (iters or j) and (now + duration >= limit_s or (
                        check is not None and check.possible(free, ratio, j))):
                    stop = True
                    break
                need = boundary[j % p]
                if need > free:
                    slow = True
                    break
                free -= need
                ratio = max(ratio - decay, ratio_min)
                d = decode_time(n, ctx)
                end = now + duration + d
                duration += d
                seg_s += d
                seg_ctx_s += ctx * d
                ctx += n
                window.append((end, n))
                gen += n
                j += 1
            if j:
                pool.allocate(pool.free_pages - free)
                for s in running:
                    o = -s.kv_tokens % p
                    if j > o:
                        s.own_pages += (j - 1 - o) // p + 1
                    s.kv_tokens += j
                    s.output_tokens += j
                    tokens[s.rid] = tokens.get(s.rid, 0) + j
                self._ctx_tokens = ctx
                self._ratio = ratio
                self._gen_window_tokens += gen
                counters.generation_tokens += gen
                counters.decode_s += seg_s
                counters.decode_batch_s += n * seg_s
                counters.decode_context_s += seg_ctx_s
                iters += j
                if j == last and any(
                        s.output_tokens >= s.req.max_new_tokens for s in running):
                    self._running = [s for s in running
                                     if s.output_tokens < s.req.max_new_tokens]
                    for s in running:
                        if s.output_tokens >= s.req.max_new_tokens:
                            self._ctx_tokens -= s.kv_tokens
                            finished.append(self._finish(s, end, FinishReason.LENGTH))
                    break
            if stop:
                break
            if slow:   # this iteration must evict or retract: the general path
                dur, decoded, fin, retr = self._decode_core(now + duration)
                for s in decoded:
                    tokens[s.rid] = tokens.get(s.rid, 0) + 1
                duration += dur
                iters += 1
                if fin or retr:
                    finished.extend(fin)
                    retracted.extend(retr)
                    break
        self._now = max(self._now, now + duration)
        self._trim_gen_window()
        return StepResult(
            duration_s=duration, decode_tokens=sum(tokens.values()),
            progress=tuple(TokenProgress(rid, k, False) for rid, k in tokens.items() if k),
            finished=tuple(finished), retracted=tuple(retracted))

    def _prefill_check(self) -> _PrefillCheck | None:
        """Would ``_schedule_prefill`` schedule anything, over a decode segment (see
        ``_PrefillCheck``); None when it is False throughout
        (nothing waits, or the batch is full: neither changes inside a segment)."""
        if self._chunked is None and (
                not self._waiting or len(self._running) >= self.config.max_running_requests):
            return None
        return _PrefillCheck(self)

    def _decode_core(
        self, now: float
    ) -> tuple[float, list[ReqState], list[FinishedRequest], list[str]]:
        """One decode iteration: (duration, requests that decoded, finished, retracted rids)."""
        p = self._page
        mem = self.memory
        need = 0
        for s in self._running:
            if s.kv_tokens % p == 0:
                need += 1
        retracted: list[str] = []
        finished: list[FinishedRequest] = []
        mem.ledger.evictor = None       # the whole batch's growth
        if not mem.ensure_free(need):
            mem.ledger.evictor = RETRACTION_EVICTOR
            need = self._retract(now, retracted, finished)
            mem.ledger.evictor = None
        else:
            self._ratio = max(self._ratio - self._ratio_decay, self._ratio_min)
        running = self._running
        if not running:
            return 0.0, running, finished, retracted
        n = len(running)
        duration = self.cost.decode_time_s(n, self._ctx_tokens)
        counters = self.counters
        counters.decode_s += duration
        counters.decode_batch_s += n * duration
        counters.decode_context_s += self._ctx_tokens * duration
        end = now + duration
        mem.pool.allocate(need)
        done: list[ReqState] = []
        for s in running:
            if s.kv_tokens % p == 0:
                s.own_pages += 1
            s.kv_tokens += 1
            s.output_tokens += 1
            if s.output_tokens >= s.req.max_new_tokens:
                done.append(s)
        self._ctx_tokens += n
        if done:
            self._running = [s for s in running if s.output_tokens < s.req.max_new_tokens]
            for s in done:
                self._ctx_tokens -= s.kv_tokens
                finished.append(self._finish(s, end, FinishReason.LENGTH))
        self._record_generation(end, n)
        return duration, running, finished, retracted

    def _retract(self, now: float, retracted: list[str], aborted: list[FinishedRequest]) -> int:
        """SGLang's ``retract_decode``; returns the pages the remaining batch needs."""
        cfg = self.config
        p = self._page
        mem = self.memory
        if cfg.retraction_policy == "priority":
            sign = 1 if cfg.schedule_low_priority_values_first else -1
            order = sorted(self._running, reverse=True, key=lambda s: (
                s.req.priority * -sign, s.output_tokens, -s.req.prompt_tokens))
        else:
            order = sorted(self._running, reverse=True,
                           key=lambda s: (s.output_tokens, -s.req.prompt_tokens))

        def need_of(batch: list[ReqState]) -> int:
            return sum(1 for s in batch if s.kv_tokens % p == 0)

        first = True
        while first or not mem.ensure_free(need_of(order)):
            if len(order) == 1:
                break
            first = False
            st = order.pop()
            self._ctx_tokens -= st.kv_tokens
            mem.release(st)
            mem.evict(-(-len(order) * cfg.retract_decode_steps // p))
            st.retractions += 1
            st.target_tokens = 0
            self.counters.num_retracted_reqs += 1
            self._waiting.append(st)
            retracted.append(st.rid)
        if len(order) <= 1 and not mem.ensure_free(need_of(order)):
            last = order.pop()
            self._ctx_tokens -= last.kv_tokens
            self.counters.num_aborted_reqs += 1
            aborted.append(self._finish(last, now, FinishReason.ABORT))
        keep = {id(s) for s in order}
        self._running = [s for s in self._running if id(s) in keep]
        decoded = sum(s.output_tokens for s in order)
        max_new = sum(s.req.max_new_tokens for s in order)
        self._ratio = min(1.0, (decoded + cfg.retract_decode_steps * len(order)) / (max_new + 1))
        return need_of(order)

    def _finish(self, st: ReqState, end: float, reason: FinishReason) -> FinishedRequest:
        sid = st.req.session_id
        if reason is FinishReason.LENGTH and sid is not None and sid in self._sessions \
                and st.node is not None:
            self.memory.cache.lock(st.node)       # the session pins the prompt's KV
            old = self._sessions[sid]
            if old is not None:
                self.memory.cache.unlock(old)
            self._sessions[sid] = st.node
        self.memory.release(st)
        self.memory.ledger.request_left(st.req.owner)
        del self._live[st.rid]
        c = self.counters
        if st.admissions:
            c.prompt_tokens += st.req.prompt_tokens
            c.cached_tokens += st.cached_tokens
        c.evicted_tokens = self.memory.evicted_tokens
        c.e2e_latency_s.append(end - st.req.arrival_s)
        return FinishedRequest(
            rid=st.rid, prompt_tokens=st.req.prompt_tokens, completion_tokens=st.output_tokens,
            cached_tokens=st.cached_tokens, recomputed_tokens=st.recomputed_tokens,
            finish_reason=reason, arrival_s=st.req.arrival_s, first_token_s=st.first_token_s,
            finished_s=end, retractions=st.retractions, miss_tokens=st.miss_tokens,
            host_cached_tokens=st.load_tokens)

    def _record_generation(self, end: float, tokens: int) -> None:
        self.counters.generation_tokens += tokens
        self._now = max(self._now, end)
        if tokens:
            self._gen_window.append((end, tokens))
            self._gen_window_tokens += tokens
        self._trim_gen_window()

    def _trim_gen_window(self) -> None:
        horizon = self._now - self.config.gen_throughput_window_s
        w = self._gen_window
        while w and w[0][0] < horizon:
            self._gen_window_tokens -= w.popleft()[1]


class _PrefillCheck:
    """Would a prefill be scheduled now? Evaluated inside a decode segment from scalars.

    SGLang admits the head of the queue when ``need < available - reserved`` with
    ``available = (free + evictable) * page`` and
    ``reserved = new_token_ratio * sum(min(remaining_new, clip))`` over the running batch.
    Inside a segment the queue, the radix tree and the locks do not change (an eviction or a
    retraction ends the segment), so ``need`` and ``evictable`` are constants; ``free`` and
    the ratio are the segment's scalars; after ``j`` iterations every request has ``j`` fewer
    tokens to go, so the sum is ``sum(rem_r - j)`` over requests already under the clip plus
    ``clip`` for the rest, kept with a pointer over the sorted entry points (called with
    non-decreasing ``j``).
    """

    __slots__ = ("_always", "_clip", "_cnt", "_cnt_total", "_entry", "_evictable", "_i",
                 "_need", "_page", "_sum")

    def __init__(self, engine: Engine) -> None:
        self._always = engine._chunked is not None
        self._need = 0 if self._always else engine._head_need()
        self._evictable = engine.memory.cache.evictable_blocks
        self._page = engine._page
        clip = engine.config.clip_max_new_tokens
        self._clip = clip
        self._cnt = 0           # requests whose min(rem - j, clip) is rem - j
        self._sum = 0           # their sum of rem
        over: list[tuple[int, int]] = []
        for s in engine._running:
            rem = s.req.max_new_tokens - s.output_tokens
            if rem <= clip:
                self._cnt += 1
                self._sum += rem
            else:
                over.append((rem - clip, rem))
        over.sort()
        self._entry = over      # (j from which rem - j <= clip, rem)
        self._i = 0
        self._cnt_total = len(engine._running)

    def possible(self, free_pages: int, ratio: float, j: int) -> bool:
        if self._always:
            return True
        entry = self._entry
        while self._i < len(entry) and entry[self._i][0] <= j:
            self._cnt += 1
            self._sum += entry[self._i][1]
            self._i += 1
        reserved_sum = self._sum - self._cnt * j + self._clip * (self._cnt_total - self._cnt)
        available = (free_pages + self._evictable) * self._page
        return self._need < available - ratio * reserved_sum
