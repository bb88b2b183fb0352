"""``thunder-sim demo``: the README's main job, in reduced configurations.

The live test starts the real processes (two ``thunder-sim serve`` engines and
``thunder-scheduler serve``, twice) on loopback ports and replays real shared sessions; the
virtual tests run the same comparison with no processes.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from thunder_sim.demo import main

ROW = re.compile(r"^(scheduler|engine-only) \((\w+)\):\s+([\d.]+) steps/min, KV hit rate "
                 r"([\d.]+), (\d+) steps", re.M)
REDUCED = ["--sessions", "4", "--max-steps", "4", "--concurrency", "4", "--duration-s", "120",
           "--no-progress"]


def rows(out: str) -> dict[str, tuple[str, float, float, int]]:
    return {m[1]: (m[2], float(m[3]), float(m[4]), int(m[5])) for m in ROW.finditer(out)}


def check_report(out: str, policy: str = "thunder") -> dict[str, tuple[str, float, float, int]]:
    """Both configurations ran steps and the setup is printed."""
    for header in ("sessions: ", "gaps: ", "fleet: 2 simulated H100 engines", "load: 4 concurrent",
                   "compared: the scheduler"):
        assert header in out, header
    assert "trimmed to their first 4 steps" in out
    got = rows(out)
    assert got["scheduler"][0] == policy and got["engine-only"][0] == "round_robin"
    for _name, spm, hit, steps in got.values():
        assert steps > 0 and spm > 0 and 0 <= hit <= 1
    assert re.search(rf"^\| {policy} \| 2 \| 4 \| \d+ \|", out, re.M)
    assert re.search(r"^\| round_robin \| 2 \| 4 \| \d+ \|", out, re.M)
    assert re.search(r"^ratio: [\d.]+x steps/min", out, re.M)
    return got


def test_virtual_demo_reduced(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*REDUCED, "--virtual"]) == 0
    out = capsys.readouterr().out
    check_report(out)
    assert "virtual mode" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--replicas", "0"], "--replicas must be >= 1"),
    (["--duration-s", "-5"], "--duration-s must be a positive number"),
    (["--time-scale", "0"], "--time-scale must be a positive number"),
    (["--kv-pool-tokens", "100"], "--kv-pool-tokens"),
    (["--kv-pool-tokens", "20000"], "cannot hold the sample's largest step"),
    (["--sessions", "0"], "--sessions must be positive"),
])
def test_bad_flags_are_named(flags: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*REDUCED, "--virtual", *flags]) == 2
    err = capsys.readouterr().err
    assert "thunder-sim demo: error:" in err and message in err


@pytest.mark.slow
def test_live_demo_reduced_runs_processes_and_prints_both_configurations() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "thunder_sim", "demo", *REDUCED, "--time-scale", "20"],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    check_report(out)
    assert "live processes" in out and "time scale: 20" in out
    for policy in ("thunder", "round_robin"):   # the lifecycle API answered every call
        assert re.search(rf"^instrument \({policy}\): replay event-loop lag .*, "
                         r"0 lifecycle API errors$", out, re.M), out
    assert re.search(r"^demo finished in \d+ s wall", out, re.M)


@pytest.mark.slow
def test_virtual_demo_default_shows_the_scheduler_ahead(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The default configuration oversubscribes the KV pools (printed load > 1x) and the
    program-aware scheduler beats engine-only on steps/min and hit rate."""
    assert main(["--virtual", "--no-progress"]) == 0
    out = capsys.readouterr().out
    load = re.search(r"peak contexts are ([\d.]+)x the fleet's KV", out)
    assert load is not None and float(load[1]) > 2
    got = rows(out)
    ours, base = got["scheduler"], got["engine-only"]
    assert ours[1] > 1.2 * base[1] and ours[2] > base[2] + 0.2
