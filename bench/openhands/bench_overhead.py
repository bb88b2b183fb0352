"""Overhead per LLM call added by the thunder-openhands toggle (target: under 200 us).

Two measurements, toggle off vs on, interleaved rounds, medians:

* direct: the added code path itself, ``LLM._prepare_transport_kwargs`` (the SDK method the
  toggle wraps; it runs once per LLM call) with a conversation's session header, off vs on;
* end to end: ``LLM.completion(...)`` inside a conversation's call context against a zero-work
  OpenAI-compatible server on loopback (``thunder_testkit.openai_server``, a fake), off vs on with
  ``route=False`` so both go to the same server: the difference is the toggle's cost on the
  full SDK -> litellm -> HTTP path (the scheduler's own proxy hop is measured in bench/proxy).

Run: ``.venv/bin/python bench/openhands/bench_overhead.py`` -> bench/results/openhands/overhead.md
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "openhands"
from openhands.sdk import LLM, Message, TextContent  # noqa: E402
from openhands.sdk.llm.call_context import LLMCallContext  # noqa: E402

import thunder_openhands  # noqa: E402
from thunder_core.contract import LITELLM_SESSION_HEADER  # noqa: E402
from thunder_testkit.openai_server import ScriptedOpenAI  # noqa: E402


class NullEmitter:
    def program_started(self, *a: object, **k: object) -> None: ...
    def tool_started(self, *a: object, **k: object) -> None: ...
    def tool_ended(self, *a: object, **k: object) -> None: ...
    def program_ended(self, *a: object, **k: object) -> None: ...


def per_call_s(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def interleaved(fn: Callable[[], object], n: int, rounds: int, url: str
                ) -> tuple[float, float, float, float]:
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        off.append(per_call_s(fn, n))
        thunder_openhands.enable(url, route=False, emitter=NullEmitter())
        on.append(per_call_s(fn, n))
        thunder_openhands.disable()
    diffs = sorted(b - a for a, b in zip(off, on, strict=True))
    quartiles = statistics.quantiles(diffs, n=4)
    return statistics.median(off), statistics.median(on), quartiles[0], quartiles[2]


def main() -> None:
    warnings.simplefilter("ignore")
    fake = ScriptedOpenAI(script=["ok"])
    fake.start()
    try:
        llm = LLM(model="openai/scripted", base_url=f"{fake.url}/v1", api_key="k",
                  usage_id="bench", num_retries=0)
        messages = [{"role": "user", "content": "hi"}]

        def build() -> object:
            return llm._prepare_transport_kwargs(
                messages=messages, enable_streaming=False,
                extra_headers={LITELLM_SESSION_HEADER: "3f1b6c1e-0000-4000-8000-000000000000"})

        context = LLMCallContext(session_id="3f1b6c1e-0000-4000-8000-000000000000")
        msg = [Message(role="user", content=[TextContent(text="hi")])]

        def complete() -> object:
            return llm.completion(msg, call_context=context)

        complete()  # warm litellm's client cache
        direct = interleaved(build, 2000, 15, fake.url)
        e2e = interleaved(complete, 40, 9, fake.url)
    finally:
        fake.stop()
    rows = [("direct: LLM._prepare_transport_kwargs", *direct),
            ("end to end: LLM.completion over loopback", *e2e)]
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        "# thunder-openhands: overhead per LLM call",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}. Medians of interleaved rounds (toggle off, on, off, ...).",
        "Command: `.venv/bin/python bench/openhands/bench_overhead.py`",
        "",
        "| path | toggle off (us) | toggle on (us) | added (us) | paired diff p25..p75 (us) |",
        "|---|---|---|---|---|",
    ]
    for name, off, on, p25, p75 in rows:
        lines.append(f"| {name} | {off * 1e6:.1f} | {on * 1e6:.1f} | {(on - off) * 1e6:+.1f} "
                     f"| {p25 * 1e6:+.1f}..{p75 * 1e6:+.1f} |")
    lines += ["", "Target: under 200 us added per LLM call. The end-to-end row is one loopback "
              "LLM call through litellm; its spread between rounds on this shared machine is "
              "far larger than the direct row's difference, so read the direct row as the cost "
              "and the end-to-end row as a check that nothing else got slower."]
    (OUT / "overhead.md").write_text("\n".join(lines) + "\n")
    (OUT / "overhead.json").write_text(json.dumps(
        {name: {"off_s": off, "on_s": on, "diff_p25_s": p25, "diff_p75_s": p75}
         for name, off, on, p25, p75 in rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
