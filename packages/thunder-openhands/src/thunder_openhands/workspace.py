"""``ThunderWorkspace``: a conversation's sandbox comes from the scheduler's tool manager.

Instead of starting a cold container per conversation (``DockerWorkspace`` runs ``docker run``
each time), ``ThunderWorkspace.acquire(spec)`` asks the scheduler for a runtime of a registered
runtime spec (``POST /v1/programs/{id}/runtimes``): the tool manager hands over a warm pooled
runtime (a rename, ~10 ms) or a prepared one, and only creates one cold when its pool is empty.
The runtime belongs to the conversation's program; it is given back by ``release()``,
``close()`` of the conversation (with the toggle on), leaving a ``with`` block, or, whatever
happens to this process, by the tool manager when the program ends or its lease expires.

Steps of ``acquire``:

1. start the program (``POST /v1/programs``, framework ``openhands``, tag ``runtime_spec``);
   synchronously, because the tool manager only hands runtimes to known programs. The program
   id is a fresh UUID: the toggle makes it the conversation id. A 409 (the program is already
   live, e.g. a second workspace for it) is accepted;
2. acquire the runtime; on failure the program is ended again (nothing leaks) and the error is
   raised (``ThunderAPIError`` / ``ThunderUnavailable``): without a sandbox there is no agent.

Where the SDK's tools run, by runtime backend (``RuntimeView.backend``):

* ``local`` (the local-process backend): the runtime is a directory on this host; the workspace's
  ``working_dir`` is the runtime's working directory (``<runtime dir>/root/<spec workdir>``), so
  the SDK's own terminal tool (subprocess mode) and file editor work in it unchanged;
* ``docker``: the runtime is a container; ``working_dir`` is a local scratch directory (for
  what the SDK keeps on the host), and commands run in the container through the tool manager's
  exec API: ``execute_command`` here, and the terminal tool when the agent lists
  ``Tool(name="thunder_terminal")`` (``thunder_openhands.runtime_terminal``). File transfers use
  exec too (base64 through ``sh``). The SDK's file editor still edits host files: give such
  agents the terminal only, or use an agent-server image and a ``RemoteWorkspace``.
"""

from __future__ import annotations

import base64
import logging
import shlex
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Final

from openhands.sdk.workspace import LocalWorkspace
from openhands.sdk.workspace.models import CommandResult, FileOperationResult
from pydantic import PrivateAttr

from thunder_core.client import ThunderAPIError, ThunderClient, ThunderError
from thunder_core.contract import RUNTIME_SPEC_TAG, Framework, ProgramEndStatus
from thunder_core.runtimes import ExecResult, RuntimeClient, RuntimeView

log = logging.getLogger("thunder_openhands.workspace")

ACQUIRE_TIMEOUT_S: Final = 600.0
"""A cold acquire may build the spec's image first; the tool manager bounds builds itself."""

TRANSFER_CHUNK_BYTES: Final = 48 * 1024
"""Raw bytes per exec call when uploading through ``sh``: 64 KiB of base64, far below
Linux's 128 KiB limit on a single argument (MAX_ARG_STRLEN)."""


class ThunderWorkspace(LocalWorkspace):
    """A conversation workspace backed by a scheduler-managed runtime. Build it with
    :meth:`acquire`; see the module docstring for what runs where."""

    program_id: str
    spec: str
    scheduler_url: str
    runtime_id: str
    runtime_backend: str
    program_started_by_us: bool = False

    _client: ThunderClient | None = PrivateAttr(default=None)
    _runtimes: RuntimeClient | None = PrivateAttr(default=None)
    _scratch_dir: str | None = PrivateAttr(default=None)
    _released: bool = PrivateAttr(default=False)
    _release_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def acquire(
        cls,
        spec: str,
        *,
        scheduler_url: str | None = None,
        program_id: str | None = None,
        priority: int = 0,
        admin_key: str | None = None,
        timeout_s: float = 10.0,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
    ) -> ThunderWorkspace:
        """Start the program and acquire a runtime of ``spec`` (see the module docstring).

        ``scheduler_url`` defaults to the toggle's, then ``THUNDER_SCHEDULER_URL``.
        """
        from thunder_openhands import toggle

        url = scheduler_url or toggle.scheduler_url()
        client = ThunderClient(url, admin_key=admin_key, timeout_s=timeout_s)
        runtimes = RuntimeClient(client, acquire_timeout_s=acquire_timeout_s)
        pid = program_id or str(uuid.uuid4())
        started = False
        try:
            client.start_program(pid, framework=Framework.OPENHANDS.value, priority=priority,
                                 tags={RUNTIME_SPEC_TAG: spec})
            started = True
        except ThunderAPIError as exc:
            if exc.status_code != 409:
                client.close()
                raise
        except ThunderError:
            client.close()
            raise
        try:
            view = runtimes.acquire(pid, spec)
        except ThunderError:
            if started:
                _end_quietly(client, pid, "runtime acquire failed")
            client.close()
            raise
        scratch: str | None = None
        if view.backend == "local":
            working_dir = _local_workdir(client, runtimes, view)
        else:
            scratch = tempfile.mkdtemp(prefix=f"thunder-oh-{pid[:8]}-")
            working_dir = scratch
        workspace = cls(
            working_dir=working_dir, program_id=pid, spec=spec, scheduler_url=client.base_url,
            runtime_id=view.runtime_id, runtime_backend=view.backend,
            program_started_by_us=started,
        )
        workspace._client = client
        workspace._runtimes = runtimes
        workspace._scratch_dir = scratch
        workspace._runtime_view = view
        return workspace

    _runtime_view: RuntimeView | None = PrivateAttr(default=None)

    @property
    def runtime(self) -> RuntimeView | None:
        """What the tool manager said about the runtime at acquire (source, acquire_s, ...)."""
        return self._runtime_view

    @property
    def released(self) -> bool:
        return self._released

    # -- commands ---------------------------------------------------------------------------------

    def exec(self, command: str | list[str], *, timeout_s: float | None = None,
             workdir: str | None = None) -> ExecResult:
        """Run ``command`` in the runtime through the tool manager (``sh -c`` for a string)."""
        if self._runtimes is None or self._released:
            raise RuntimeError(f"runtime {self.runtime_id} of {self.program_id} was released")
        return self._runtimes.exec(self.program_id, self.runtime_id, command,
                                   timeout_s=timeout_s, workdir=workdir)

    def execute_command(
        self, command: str, cwd: str | Path | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """The SDK's workspace API: the command runs in the runtime (both backends)."""
        workdir = str(cwd) if cwd is not None else None
        if workdir is not None and self.runtime_backend == "local":
            workdir = _container_path(self, workdir)
        try:
            result = self.exec(command, timeout_s=timeout, workdir=workdir)
        except ThunderAPIError as exc:
            if exc.status_code == 504:
                return CommandResult(command=command, exit_code=-1, stdout="",
                                     stderr=exc.reason, timeout_occurred=True)
            raise
        return CommandResult(command=command, exit_code=result.exit_code, stdout=result.stdout,
                             stderr=result.stderr, timeout_occurred=False)

    def file_upload(self, source_path: str | Path, destination_path: str | Path
                    ) -> FileOperationResult:
        if self.runtime_backend == "local":
            return super().file_upload(source_path, _host_path(self, str(destination_path)))
        src, dst = str(source_path), str(destination_path)
        try:
            data = Path(src).read_bytes()
            target = shlex.quote(dst)
            self._check(self.exec(f"mkdir -p \"$(dirname {target})\" && : > {target}"))
            for start in range(0, len(data), TRANSFER_CHUNK_BYTES):
                chunk = base64.b64encode(data[start:start + TRANSFER_CHUNK_BYTES]).decode()
                self._check(self.exec(f"echo {chunk} | base64 -d >> {target}"))
        except (OSError, ThunderError, RuntimeError) as exc:
            return FileOperationResult(success=False, source_path=src, destination_path=dst,
                                       error=str(exc))
        return FileOperationResult(success=True, source_path=src, destination_path=dst,
                                   file_size=len(data))

    def file_download(self, source_path: str | Path, destination_path: str | Path
                      ) -> FileOperationResult:
        if self.runtime_backend == "local":
            return super().file_download(_host_path(self, str(source_path)), destination_path)
        src, dst = str(source_path), str(destination_path)
        try:
            result = self._check(self.exec(f"base64 {shlex.quote(src)}"))
            data = base64.b64decode(result.stdout)
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            Path(dst).write_bytes(data)
        except (OSError, ValueError, ThunderError, RuntimeError) as exc:
            return FileOperationResult(success=False, source_path=src, destination_path=dst,
                                       error=str(exc))
        return FileOperationResult(success=True, source_path=src, destination_path=dst,
                                   file_size=len(data))

    @staticmethod
    def _check(result: ExecResult) -> ExecResult:
        if result.exit_code != 0:
            raise RuntimeError(f"exit {result.exit_code}: {result.stderr[-500:]}")
        return result

    # -- release ----------------------------------------------------------------------------------

    def release(self) -> None:
        """Give the runtime back (idempotent, never raises: a failure is logged and the tool
        manager's lifecycle GC removes the runtime when the program ends)."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        try:
            if self._runtimes is not None:
                self._runtimes.release(self.program_id, self.runtime_id)
        except ThunderAPIError as exc:
            if exc.status_code not in (404, 409):  # already gone with its program
                log.warning("thunder: releasing runtime %s failed: %s", self.runtime_id, exc)
        except ThunderError as exc:
            log.warning("thunder: releasing runtime %s failed (%s); the scheduler removes it "
                        "when program %s ends", self.runtime_id, exc, self.program_id)
        finally:
            if self._client is not None:
                self._client.close()
            if self._scratch_dir is not None:
                shutil.rmtree(self._scratch_dir, ignore_errors=True)

    def end_program(self, status: ProgramEndStatus = ProgramEndStatus.OK,
                    reason: str = "workspace closed") -> None:
        """End the program (use without the toggle, which ends it at conversation close)."""
        url = self.scheduler_url
        with ThunderClient(url, timeout_s=10.0) as client:
            _end_quietly(client, self.program_id, reason, status)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        try:
            super().__exit__(exc_type, exc_val, exc_tb)
        finally:
            self.release()


def _end_quietly(client: ThunderClient, program_id: str, reason: str,
                 status: ProgramEndStatus = ProgramEndStatus.ERROR) -> None:
    try:
        client.end_program(program_id, status=status, reason=reason)
    except ThunderError as exc:
        log.warning("thunder: ending program %s failed: %s", program_id, exc)


def _local_workdir(client: ThunderClient, runtimes: RuntimeClient, view: RuntimeView) -> str:
    """Host path of a local-process runtime's working directory (see ``LocalProcessBackend``:
    the runtime directory is ``container_id``; container paths live under its ``root/``)."""
    spec = runtimes.get_spec(view.spec).spec
    path = Path(view.container_id) / "root" / spec.workdir.lstrip("/")
    if not path.is_dir():
        raise RuntimeError(
            f"runtime {view.runtime_id} is a local-process runtime but {path} is not a "
            "directory on this host: the scheduler runs on another machine"
        )
    return str(path)


def _runtime_root(workspace: ThunderWorkspace) -> Path:
    view = workspace.runtime
    if view is None:
        raise RuntimeError("workspace has no runtime")
    return Path(view.container_id) / "root"


def _host_path(workspace: ThunderWorkspace, container_path: str) -> str:
    if not container_path.startswith("/"):
        return str(Path(workspace.working_dir) / container_path)
    root = _runtime_root(workspace)
    if Path(container_path).is_relative_to(root):
        return container_path
    return str(root / container_path.lstrip("/"))


def _container_path(workspace: ThunderWorkspace, path: str) -> str:
    """A host path inside a local runtime -> the runtime's own path (``/work/...``)."""
    root = _runtime_root(workspace)
    resolved = Path(path) if Path(path).is_absolute() else Path(workspace.working_dir) / path
    if resolved.is_relative_to(root):
        return "/" + str(resolved.relative_to(root))
    return path


__all__ = ["ACQUIRE_TIMEOUT_S", "ThunderWorkspace"]
