"""Run a server as a child process: start it, wait until it is ready, keep its output, stop it.

One launcher for everything that starts Thunder's servers or an engine as a process: the demo
(``thunder-sim demo``), the benches and the test fixtures.

* The child's stdout and stderr go to one pipe that a thread drains line by line (an undrained
  pipe fills up and blocks the child's logging, and with it its event loop) into an optional log
  file and the last ``keep_lines`` lines in memory.
* Ready means: a line matched ``ready`` (a regex; its first group, if any, is the child's URL),
  then, if ``health`` is given, ``GET url + health`` answered 200 (and ``accept(body)`` held).
  A child that exits or misses the deadline raises :class:`LaunchError` with its output's tail.
* ``stop()`` sends SIGTERM, waits ``stop_timeout_s``, then kills; it is idempotent.

Standard library only, so it costs the packages that ship it nothing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "ChildProcess",
    "LaunchError",
    "environ_without",
    "free_port",
    "launch",
    "stop_all",
    "wait_http",
]

STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05


class LaunchError(RuntimeError):
    """A child did not become ready; the message holds the tail of its output."""


def environ_without(prefix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus the variables starting with ``prefix``, plus ``extra``
    (a child started for a fixed configuration must not pick up the caller's settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a child that must be told its port (one that
    cannot bind port 0 and report it); another process may take it before the child binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout_s: float, accept: Callable[[bytes], bool] | None = None,
              alive: Callable[[], bool] | None = None) -> None:
    """Until ``GET url`` answers 200 (and ``accept(body)`` is true); ``LaunchError`` after
    ``timeout_s`` or as soon as ``alive()`` turns false."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, max(0.1, timeout_s))) as response:
                body = response.read()
                if response.status == 200 and (accept is None or accept(body)):
                    return
                last = f"HTTP {response.status}: {body[:200]!r}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        if alive is not None and not alive():
            raise LaunchError(f"GET {url}: the process exited ({last})")
        if time.monotonic() >= deadline:
            raise LaunchError(f"GET {url} not ready after {timeout_s:g} s: {last}")
        time.sleep(_POLL_S)


class ChildProcess:
    """A started child; see the module docstring. Use :func:`launch` to start and wait."""

    def __init__(self, argv: Sequence[str], *, name: str, ready: str | re.Pattern[str] | None,
                 url: str = "", log: Path | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, keep_lines: int = 2000) -> None:
        self.name = name
        self.argv = list(argv)
        self.url = url
        self.ready_match: re.Match[str] | None = None
        self.log = log
        self._ready = re.compile(ready) if isinstance(ready, str) else ready
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._changed = threading.Event()  # set on the ready line and at end of output
        self._eof = False
        self._sink = log.open("w") if log is not None else None
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", cwd=cwd,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})
        self._drain = threading.Thread(target=self._read, name=f"drain-{name}", daemon=True)
        self._drain.start()

    def _read(self) -> None:
        try:
            self._copy_lines()
        except (OSError, ValueError):  # the pipe was closed under us by stop()
            pass
        self._eof = True
        self._changed.set()

    def _copy_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            if self._sink is not None:
                self._sink.write(line)
                self._sink.flush()
            if self.ready_match is None and self._ready is not None:
                self._match(line)

    def _match(self, line: str) -> None:
        assert self._ready is not None
        if match := self._ready.search(line):
            self.ready_match = match
            if match.re.groups:
                self.url = match.group(1)
            self._changed.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """The kept lines of the child's output (the last ``keep_lines``)."""
        return "".join(list(self._lines))

    def tail(self, chars: int = 2000) -> str:
        return self.output()[-chars:]

    def wait_ready(self, timeout_s: float, *, health: str | None = None,
                   accept: Callable[[bytes], bool] | None = None) -> str:
        """Wait for the ready line (and ``health``); return the URL. On failure the child is
        stopped and ``LaunchError`` says why, with its output's tail."""
        deadline = time.monotonic() + timeout_s
        try:
            if self._ready is not None:
                while self.ready_match is None:
                    if self._eof:
                        raise LaunchError("exited before its ready line")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LaunchError(f"no ready line ({self._ready.pattern!r}) after "
                                          f"{timeout_s:g} s")
                    self._changed.wait(min(left, 1.0))
            if health is not None:
                if not self.url:
                    raise LaunchError("a health check needs a URL (from the ready line or url=)")
                wait_http(f"{self.url}{health}", timeout_s=max(0.0, deadline - time.monotonic()),
                          accept=accept, alive=self.alive)
        except LaunchError as exc:
            code = self.stop()
            raise LaunchError(f"{self.name} did not start ({exc}; exit {code}):\n"
                              f"{self.tail()}") from None
        return self.url

    def terminate(self) -> None:
        """Send SIGTERM and return at once (``stop`` waits)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code. Idempotent."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain.join(timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._sink is not None and not self._drain.is_alive():
            self._sink.close()
        return self.process.returncode

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stop_all(children: Sequence[ChildProcess], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop several children, letting them shut down in parallel."""
    for child in children:
        child.terminate()
    for child in children:
        child.stop(timeout_s)


def launch(argv: Sequence[str], *, name: str, ready: str | re.Pattern[str] | None,
           timeout_s: float = 60.0, health: str | None = None,
           accept: Callable[[bytes], bool] | None = None, url: str = "",
           log: Path | None = None, env: Mapping[str, str] | None = None,
           cwd: Path | None = None) -> ChildProcess:
    """Start ``argv`` and wait until it is ready (see :meth:`ChildProcess.wait_ready`)."""
    child = ChildProcess(argv, name=name, ready=ready, url=url, log=log, env=env, cwd=cwd)
    child.wait_ready(timeout_s, health=health, accept=accept)
    return child
