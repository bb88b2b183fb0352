"""Agentic RL rollouts through the Thunder scheduler, as an RL framework would drive them.

Each step starts a rollout batch (``thunder_core.RolloutBatch``): ``groups`` prompts x
``samples`` samples per prompt (a GRPO group shares its prompt), one Thunder program per
trajectory. A trajectory is a small agent program:

    turn 1: chat completion with the official ``openai`` client (program id in a header)
    tool call: reported to the scheduler (tool start / tool end)
    turn 2: SGLang ``/generate`` with ``input_ids`` (program id in the body), as RL code sends it

The step ends when every trajectory has ended; then the "trainer" updates the weights, and the
scheduler is told the engines' caches are stale (``POST /flush_cache``, the router's call),
before the next step. With a scheduler started in front of SGLang (or ``thunder-sim serve``):

    thunder-scheduler serve --backend sglang=http://127.0.0.1:30000 --port 8300 &
    THUNDER_SCHEDULER_URL=http://127.0.0.1:8300 python examples/rl_rollout/rollout.py

Environment: THUNDER_SCHEDULER_URL (required), THUNDER_MODEL (default ``Qwen/Qwen3-8B``),
THUNDER_ROLLOUT_STEPS (default 2), THUNDER_ROLLOUT_GROUPS (4), THUNDER_ROLLOUT_SAMPLES (2).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from openai import OpenAI

from thunder_core import PROGRAM_ID_FIELD, RolloutBatch, ThunderClient
from thunder_core.contract import EnginePaths, RouterPaths


@dataclass(frozen=True)
class Trajectory:
    program_id: str
    group: int
    sample: int
    completion_tokens: int


def prompt_ids(group: int) -> list[int]:
    """The group's prompt as token ids (a stand-in for the tokenised task)."""
    return [1000 + group * 7 + i for i in range(96)]


def run_trajectory(batch: RolloutBatch, llm: OpenAI, http: httpx.Client, model: str,
                   group: int, sample: int) -> Trajectory:
    pid = batch.program_id(group, sample)
    first = llm.chat.completions.create(
        model=model, max_tokens=8, temperature=1.0,
        messages=[{"role": "system", "content": "You solve tasks with a Python tool."},
                  {"role": "user", "content": f"task {group}"}],
        extra_headers=batch.headers(group, sample),
    )
    batch.client.start_tool(pid, "call-1", "python")
    batch.client.end_tool(pid, "call-1")
    second = http.post(EnginePaths.GENERATE, json={
        "input_ids": [*prompt_ids(group), 7, sample],
        "sampling_params": {"max_new_tokens": 8, "temperature": 1.0},
        PROGRAM_ID_FIELD: pid,
    })
    second.raise_for_status()
    batch.finish(group, sample)
    used = first.usage.completion_tokens if first.usage is not None else 0
    return Trajectory(pid, group, sample, used + second.json()["meta_info"]["completion_tokens"])


def run_step(scheduler_url: str, step: int, groups: int, samples: int, model: str,
             ) -> list[Trajectory]:
    """One rollout batch, then the weight update's cache flush; the batch's trajectories."""
    with ThunderClient(scheduler_url) as client, \
            httpx.Client(base_url=scheduler_url, timeout=60) as http:
        llm = OpenAI(base_url=f"{scheduler_url}/v1", api_key="unused", max_retries=0)
        with RolloutBatch(client, f"step{step}", groups=groups, samples=samples) as batch, \
                ThreadPoolExecutor(max_workers=groups * samples) as pool:
            futures = [pool.submit(run_trajectory, batch, llm, http, model, group, sample)
                       for group, sample in batch.samples()]
            trajectories = [future.result() for future in futures]
        # the trainer updates the weights here; every engine's cached prefixes are now stale
        http.post(RouterPaths.FLUSH_CACHE).raise_for_status()
    return trajectories


def main() -> None:
    url = os.environ["THUNDER_SCHEDULER_URL"]
    model = os.environ.get("THUNDER_MODEL", "Qwen/Qwen3-8B")
    steps = int(os.environ.get("THUNDER_ROLLOUT_STEPS", "2"))
    groups = int(os.environ.get("THUNDER_ROLLOUT_GROUPS", "4"))
    samples = int(os.environ.get("THUNDER_ROLLOUT_SAMPLES", "2"))
    for step in range(steps):
        done = run_step(url, step, groups, samples, model)
        tokens = sum(t.completion_tokens for t in done)
        print(f"step {step}: {len(done)} trajectories, {tokens} completion tokens")


if __name__ == "__main__":
    main()
