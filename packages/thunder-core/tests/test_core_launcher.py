"""The process launcher on real child processes: ready line, health check, output, stop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from thunder_core.launcher import ChildProcess, LaunchError, environ_without, launch

PY = sys.executable
HTTP_READY = r"Serving HTTP on \S+ port \d+ \((http://[^/]+)/\)"


def test_ready_line_gives_the_url_and_health_is_checked(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with launch([PY, "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(tmp_path)],
                name="http", ready=HTTP_READY, health="/", log=log, timeout_s=30) as child:
        assert child.url.startswith("http://127.0.0.1:")
        assert child.alive()
    assert not child.alive()
    assert "Serving HTTP" in log.read_text()
    assert "Serving HTTP" in child.output()


def test_a_child_that_exits_before_ready_raises_with_its_output() -> None:
    script = "import sys; print('bad flag --x'); sys.exit(2)"
    with pytest.raises(LaunchError, match=r"(?s)early did not start.*exit 2.*bad flag --x"):
        launch([PY, "-c", script], name="early", ready="ready: (\\S+)", timeout_s=30)


def test_a_child_without_a_ready_line_is_stopped_at_the_deadline() -> None:
    child = ChildProcess([PY, "-c", "import time; print('starting', flush=True); "
                          "time.sleep(60)"], name="slow", ready="never")
    with pytest.raises(LaunchError, match=r"(?s)no ready line.*starting"):
        child.wait_ready(0.5)
    assert not child.alive()


def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('up', flush=True); time.sleep(60)")
    child = launch([PY, "-c", script], name="stubborn", ready="up", timeout_s=30)
    assert child.stop(timeout_s=0.2) == -9
    assert child.stop() == -9  # idempotent


def test_health_of_a_dead_url_fails_fast_when_the_child_exits() -> None:
    script = "print('ready: http://127.0.0.1:9', flush=True)"
    with pytest.raises(LaunchError, match="exited"):
        launch([PY, "-c", script], name="gone", ready="ready: (\\S+)", health="/health",
               timeout_s=30)


def test_environ_without_drops_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THUNDER_POLICY", "sticky")
    env = environ_without("THUNDER_", {"THUNDER_TICK_S": "0.5"})
    assert "THUNDER_POLICY" not in env
    assert env["THUNDER_TICK_S"] == "0.5"
