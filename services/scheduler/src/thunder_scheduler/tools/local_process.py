"""LocalProcessBackend: runtimes as working directories and subprocesses, for hosts without Docker.

A runtime is the directory ``<root>/<prefix>--<runtime_id>/`` holding ``meta.json`` (labels,
owner key, ports) and ``root/``, under which the spec's absolute paths live (``workdir`` ``/work``
becomes ``root/work``; each volume path gets its own directory). Commands run with ``sh -c`` on
the host, in a new session, with the spec's environment plus ``THUNDER_RUNTIME_MARK`` (the
runtime directory's name: prefix and runtime id) and ``THUNDER_PORT_<port>`` for each
published port. It is *not* an isolation boundary; it gives the same lifecycle (create,
exec, destroy, reconcile) where Docker is absent.

Keep-alive: like a container, a runtime runs the spec's ``command`` (default ``sleep``) for its
whole life, started in the runtime's workdir with the runtime's mark, detached (a shell starts
it in the background and exits, so the host's init adopts and reaps it); its pid is in
``meta.json``. ``alive`` checks that this process still exists and is not a zombie.

Cleanup: ``destroy`` SIGKILLs every process whose environment carries the runtime's mark (read
from ``/proc/<pid>/environ``, so processes that escaped the session or outlived a SIGKILLed
manager are found too), then removes the directory. Ports are reserved by binding port 0 and
releasing it (the OS does not hand the same ephemeral port out again at once); ``image`` is
ignored and a ``dockerfile`` spec fails to build with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from thunder_core.launcher import free_port
from thunder_core.runtimes import RuntimeSpec
from thunder_scheduler.tools.base import (
    BackendRuntime,
    BuildFailed,
    CreateFailed,
    ExecOutput,
    ExecTimeout,
    ImageInfo,
    ObservedRuntime,
    RuntimeLabels,
)

MARK_ENV = "THUNDER_RUNTIME_MARK"
META_FILE = "meta.json"


def _marked_pids(mark: str) -> list[int]:
    needle = f"{MARK_ENV}={mark}".encode()
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry))
    return pids


def _kill_marked(mark: str) -> None:
    for _ in range(5):  # a dying shell may fork once more; repeat until none are left
        pids = [pid for pid in _marked_pids(mark) if pid != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _running(pid: int, mark: str) -> bool:
    """Whether ``pid`` exists, is not a zombie, and carries the runtime mark ``mark``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X") and f"{MARK_ENV}={mark}".encode() in environ.split(b"\0")


def _disk_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class LocalProcessBackend:
    name = "local"

    def __init__(self, root_dir: str | None = None, *, publish_host: str = "127.0.0.1") -> None:
        self._own_root = root_dir is None
        self.root = Path(root_dir or tempfile.mkdtemp(prefix="thunder-local-rt-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.publish_host = publish_host

    def _dir(self, prefix: str, runtime_id: str) -> Path:
        return self.root / f"{prefix}--{runtime_id}"

    async def ping(self) -> None:
        return None

    async def build(self, spec: RuntimeSpec, spec_hash: str, label_prefix: str) -> ImageInfo:
        if spec.dockerfile is not None:
            raise BuildFailed(
                f"spec {spec.name!r}: the local backend cannot build Dockerfiles; "
                "give an image and put the steps in setup_commands"
            )
        return ImageInfo(ref=f"local:{spec.name}", size_bytes=0, built_by_us=False)

    async def remove_image(self, image: ImageInfo) -> None:
        return None

    async def create(
        self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels, owner_key: str
    ) -> BackendRuntime:
        path = self._dir(labels.prefix, labels.runtime_id)
        ports = {port: free_port(self.publish_host) for port in spec.ports}
        volumes = tuple(str(path / "root" / v.lstrip("/")) for v in spec.volumes)
        meta = {"labels": labels.as_dict(), "spec": spec.name, "owner": owner_key,
                "workdir": spec.workdir, "env": spec.env,
                "ports": {str(k): v for k, v in ports.items()}, "volumes": list(volumes)}

        def make() -> None:
            path.mkdir(parents=True)
            (path / META_FILE).write_text(json.dumps(meta))
            for directory in (spec.workdir, *spec.volumes):
                (path / "root" / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)

        runtime = BackendRuntime(labels.runtime_id, str(path), self.publish_host, ports, volumes)
        try:
            await asyncio.to_thread(make)
            await self._start_keepalive(runtime, spec.command)
            for command in spec.setup_commands:
                await self._setup(runtime, command)
        except OSError as exc:
            await asyncio.shield(self.destroy(runtime))
            raise CreateFailed(f"cannot create runtime directory {path}: {exc}") from exc
        except BaseException:
            await asyncio.shield(self.destroy(runtime))
            raise
        return runtime

    async def _start_keepalive(self, runtime: BackendRuntime, command: list[str]) -> None:
        launcher = ["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "keepalive",
                    *command]
        result = await self.exec(runtime, launcher, timeout_s=30.0, workdir=None, env={})
        try:
            pid = int(result.stdout.decode().strip())
        except ValueError as exc:
            raise CreateFailed(f"cannot start the keep-alive process {command!r}") from exc
        meta_path = Path(runtime.ref) / META_FILE

        def write() -> None:
            meta = json.loads(meta_path.read_text())
            meta["keepalive_pid"] = pid
            meta_path.write_text(json.dumps(meta))

        await asyncio.to_thread(write)

    async def alive(self, runtime: BackendRuntime) -> bool:
        path = Path(runtime.ref)

        def check() -> bool:
            try:
                meta = json.loads((path / META_FILE).read_text())
            except (OSError, ValueError):
                return False
            pid = meta.get("keepalive_pid")
            return isinstance(pid, int) and _running(pid, path.name)

        return await asyncio.to_thread(check)

    async def _setup(self, runtime: BackendRuntime, command: str) -> None:
        try:
            result = await self.exec(runtime, ["sh", "-c", command], timeout_s=600.0,
                                     workdir=None, env={})
        except ExecTimeout as exc:
            raise CreateFailed(f"setup command timed out: {command!r}") from exc
        if result.exit_code != 0:
            raise CreateFailed(
                f"setup command {command!r} exited {result.exit_code}",
                detail=result.stderr.decode(errors="replace")[-4000:],
            )

    async def assign(self, runtime: BackendRuntime, labels: RuntimeLabels, owner_key: str) -> None:
        meta_path = Path(runtime.ref) / META_FILE

        def write() -> None:
            meta = json.loads(meta_path.read_text())
            meta["owner"] = owner_key
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta))
            tmp.replace(meta_path)

        await asyncio.to_thread(write)

    def _host_path(self, runtime: BackendRuntime, container_path: str) -> str:
        return str(Path(runtime.ref) / "root" / container_path.lstrip("/"))

    async def exec(
        self, runtime: BackendRuntime, argv: list[str], *, timeout_s: float,
        workdir: str | None, env: dict[str, str],
    ) -> ExecOutput:
        meta = json.loads(await asyncio.to_thread((Path(runtime.ref) / META_FILE).read_text))
        cwd = self._host_path(runtime, workdir or meta["workdir"])
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": cwd,
            **meta["env"], **env, MARK_ENV: Path(runtime.ref).name,
            **{f"THUNDER_PORT_{k}": str(v) for k, v in meta["ports"].items()},
        }
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=full_env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return ExecOutput(127, b"", str(exc).encode(), time.monotonic() - started)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ExecTimeout(f"exec exceeded {timeout_s} s and was killed") from None
        code = proc.returncode if proc.returncode is not None else -1
        return ExecOutput(code, stdout, stderr, time.monotonic() - started)

    async def destroy(self, runtime: BackendRuntime) -> None:
        path = Path(runtime.ref)

        def remove() -> None:
            _kill_marked(path.name)
            shutil.rmtree(path, ignore_errors=True)

        await asyncio.to_thread(remove)

    async def list_runtimes(self, label_prefix: str) -> list[ObservedRuntime]:
        def scan() -> list[ObservedRuntime]:
            found: list[ObservedRuntime] = []
            for path in self.root.glob(f"{label_prefix}--*"):
                runtime_id = path.name[len(label_prefix) + 2:]
                try:
                    meta = json.loads((path / META_FILE).read_text())
                except (OSError, ValueError):
                    meta = {}  # half-made: reported with no owner, so reconcile removes it
                found.append(ObservedRuntime(
                    runtime_id=runtime_id, ref=str(path), spec_name=meta.get("spec", ""),
                    owner_key=meta.get("owner", ""), disk_bytes=_disk_bytes(path / "root"),
                    ports={int(k): v for k, v in meta.get("ports", {}).items()},
                    volumes=tuple(meta.get("volumes", ())),
                ))
            return found

        return await asyncio.to_thread(scan)

    def close(self) -> None:
        """Remove the root directory if this backend made it (a temp dir)."""
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["MARK_ENV", "LocalProcessBackend"]
