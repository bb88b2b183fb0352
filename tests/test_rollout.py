"""The RL rollout helper (``thunder_core.RolloutBatch``) against the real service, and the
rollout example driven through the scheduler in front of simulated SGLang engines."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fixtures.scheduler_service import RunningService
from fixtures.sim_fleet import SimFleet

from thunder_core import RolloutBatch, ThunderClient
from thunder_core.contract import (
    ROLLOUT_GROUP_TAG,
    ROLLOUT_SAMPLE_TAG,
    ROLLOUT_TAG,
    ProgramEndStatus,
    ProgramStatus,
)
from thunder_core.rollout import CUT_REASON
from thunder_scheduler.settings import load_settings
from thunder_testkit.polling import until

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rl_rollout" / "rollout.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rl_rollout_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_batch_starts_tagged_programs_and_cuts_what_is_left(
    scheduler_service: Callable[..., RunningService],
) -> None:
    service = scheduler_service(load_settings({}))
    with ThunderClient(service.url) as client:
        batch = RolloutBatch(client, "step3", groups=2, samples=3).start()
        assert batch.program_ids() == [f"step3-g{g}-s{s}" for g in range(2) for s in range(3)]
        view = client.get_program("step3-g1-s2")
        assert view.status is ProgramStatus.ACTIVE
        assert view.tags == {ROLLOUT_TAG: "step3", ROLLOUT_GROUP_TAG: "1",
                             ROLLOUT_SAMPLE_TAG: "2"}
        assert batch.headers(0, 1) == {"X-Thunder-Program-Id": "step3-g0-s1"}
        opened = client.get_rollout("step3")   # start() opened the batch with its size
        assert (opened.num_programs, opened.live_program_ids) == (6, batch.program_ids())

        batch.finish(0, 0)
        batch.finish(0, 0)  # a second finish is a no-op, not an error
        ended = client.get_program("step3-g0-s0")
        assert ended.end_status is ProgramEndStatus.OK
        cut = batch.cut()
        assert cut == [pid for pid in batch.program_ids() if pid != "step3-g0-s0"]
        for pid in cut:
            view = client.get_program(pid)
            assert (view.end_status, view.end_reason) == (ProgramEndStatus.CANCELLED, CUT_REASON)
        assert batch.cut() == [] and batch.open_ids == []
        with pytest.raises(RuntimeError, match="already started"):
            batch.start()
        with pytest.raises(IndexError):
            batch.program_id(2, 0)


def test_a_batch_id_that_makes_bad_program_ids_is_refused() -> None:
    with ThunderClient("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="program id"):
            RolloutBatch(client, "step 1", groups=1, samples=1)
        with pytest.raises(ValueError, match="groups and samples"):
            RolloutBatch(client, "s", groups=0, samples=1)


@pytest.mark.slow
def test_the_rollout_example_runs_two_steps_with_a_weight_update_between(
    sim_fleet: SimFleet, scheduler_service: Callable[..., RunningService],
) -> None:
    engines = sim_fleet(2, time_scale=50.0)
    service = scheduler_service(load_settings({
        "backends": [f"sglang={url}" for url in engines], "monitor_interval_s": 0.2}))
    until(lambda: httpx.get(f"{service.url}/ready", timeout=5).status_code == 200,
          timeout_s=30, what="the scheduler to be ready")
    example = _example()
    core = service.app.state.thunder.driver.core
    for step in range(2):
        done = example.run_step(service.url, step, 2, 2, "Qwen/Qwen3-8B")
        assert sorted((t.group, t.sample) for t in done) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert all(t.completion_tokens > 0 for t in done)
        with ThunderClient(service.url) as client:
            for trajectory in done:
                view = client.get_program(trajectory.program_id)
                assert (view.requests, view.tool_calls) == (2, 1), view
                assert view.end_status is ProgramEndStatus.OK
                assert view.tags[ROLLOUT_TAG] == f"step{step}"
        flushes = service.call(lambda: core.snapshot().counters.backend_flushes)
        assert flushes == 2 * (step + 1)  # both engines, once per step
