"""Time to first tool call per conversation: a warm pooled sandbox vs a cold one, on real Docker.

Each sample is one conversation's start as ThunderWorkspace does it: program start, runtime
acquire from the scheduler's tool manager, then the first tool call (one exec of ``pwd`` in the
container, what the agent's first terminal call does). Two specs on the same image differ only
in ``pool_size``: ``warm`` keeps a pool (the acquire is a hand-over), ``cold`` has none (a
container is created and started per conversation, like ``DockerWorkspace``). The tool manager
recycles released runtimes and shares pools between specs of equal content, so every cold
sample uses a spec of its own (``cold-<i>``, a distinct env var) that no runtime has served.
Samples alternate warm/cold; each conversation closes (runtime released, program ended) before
the next, and the pool refills between samples (we wait for ``pool_ready``).

Needs the private daemon of ``scripts/setup_docker.sh`` (started here if absent).
Run: ``.venv/bin/python bench/openhands/bench_sandbox.py`` -> bench/results/openhands/sandbox.md
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "openhands"

from thunder_core.client import ThunderClient  # noqa: E402
from thunder_core.runtimes import RuntimeClient, RuntimeSpec  # noqa: E402
from thunder_openhands import ThunderWorkspace  # noqa: E402
from thunder_scheduler.settings import load_settings  # noqa: E402
from thunder_testkit import until  # noqa: E402
from thunder_testkit.service import start_service_thread  # noqa: E402

SAMPLES = 8


def docker_host() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup_docker.sh")], check=True,
                         capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values["DOCKER_HOST"]


def sample(url: str, spec: str) -> dict[str, float | str]:
    started = time.perf_counter()
    workspace = ThunderWorkspace.acquire(spec, scheduler_url=url)
    acquired = time.perf_counter()
    result = workspace.exec("pwd")
    first_tool = time.perf_counter()
    assert result.exit_code == 0 and result.stdout.strip() == "/work", result
    source = workspace.runtime.source if workspace.runtime else "?"
    workspace.release()
    workspace.end_program()
    return {"acquire_s": acquired - started, "first_tool_s": first_tool - started,
            "source": source}


def main() -> None:
    host = docker_host()
    settings = load_settings({"backends": [], "tools_enabled": True,
                              "tools": {"backend": "docker", "docker_host": host,
                                        "label_prefix": "thunderbench"}})
    service = start_service_thread(settings)
    try:
        runtimes = RuntimeClient(ThunderClient(service.url, timeout_s=60))
        runtimes.register_spec(RuntimeSpec(name="warm", image="thunder-base:latest",
                                           pool_size=1, env={"SANDBOX": "warm"}))
        results: dict[str, list[dict[str, float | str]]] = {"warm": [], "cold": []}
        for i in range(SAMPLES):
            until(lambda: runtimes.get_spec("warm").pool_ready >= 1, timeout_s=60,
                  what="the warm pool to refill")
            results["warm"].append(sample(service.url, "warm"))
            cold = f"cold-{i}"
            runtimes.register_spec(RuntimeSpec(name=cold, image="thunder-base:latest",
                                               pool_size=0, env={"SANDBOX": cold}))
            results["cold"].append(sample(service.url, cold))
    finally:
        service.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[name])

    warm, cold = med("warm", "first_tool_s"), med("cold", "first_tool_s")
    lines = [
        "# thunder-openhands: time to first tool call, warm pooled sandbox vs cold",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), dockerd 20.10 "
        f"(scripts/setup_docker.sh), image thunder-base:latest (busybox), {SAMPLES} "
        "conversations each, alternating. Medians.",
        "Command: `.venv/bin/python bench/openhands/bench_sandbox.py`",
        "",
        "| sandbox | runtime source | acquire (ms) | first tool call done (ms) |",
        "|---|---|---|---|",
    ]
    for name in ("warm", "cold"):
        sources = sorted({str(r["source"]) for r in results[name]})
        lines.append(f"| {name} | {', '.join(sources)} | {med(name, 'acquire_s') * 1e3:.1f} | "
                     f"{med(name, 'first_tool_s') * 1e3:.1f} |")
    lines += ["", f"Cold / warm time to first tool call: {cold / warm:.1f}x."]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sandbox.md").write_text("\n".join(lines) + "\n")
    (OUT / "sandbox.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
