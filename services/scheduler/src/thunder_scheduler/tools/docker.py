"""DockerBackend: runtimes as Docker containers, through the docker SDK (``docker`` 7.x).

Every SDK call is blocking, so each runs in a worker thread (``asyncio.to_thread``) under a
semaphore: ``docker_concurrency`` control calls (create, remove, list, build) and as many exec
calls at once. The client pins API version 1.41 (Docker 20.10, Debian's ``docker.io``; newer
daemons still serve it), so constructing it does not contact the daemon and a daemon that is
down surfaces as ``BackendUnavailable`` on the first call rather than at start-up.

Naming and labels: a container is named ``<prefix>-<owner_key>-<runtime_id>`` and labelled as in
``RuntimeLabels``; ``assign`` renames it (labels are immutable). Each spec volume is a named
volume ``<prefix>-<runtime_id>-v<i>`` carrying the same labels, so a volume whose container never
got made (a crash between the two calls) is still found and removed by reconcile. Ports publish
on ``publish_host`` with a daemon-chosen host port. Disk per runtime is the container's
writable layer, ``SizeRw`` from ``GET /containers/json?size=1`` (``containers.list()`` objects
do not carry it, see engines-and-frameworks.md).

Exec output: the daemon sometimes drops the attached output of a short exec (moby/moby#27289,
docker/docker-py#2042: ``echo x`` returns exit 0 and no stdout, more often under load). So the
command runs under ``sh -c`` with stdout and stderr redirected to two files in the container's
``/tmp``; after it exits they are read back through ``GET /containers/{id}/archive`` (a tar
stream, not the attach stream) and deleted. This needs ``sh`` in the image (every image the
tool manager builds has it); a read failure falls back to the attached output.

Init: with ``init`` (the default, ``ToolManagerSettings.docker_init``) every container runs the
daemon's init (``docker run --init``: tini, installed as ``docker-init``) as PID 1 with the
spec's ``command`` under it, so processes orphaned by an exec (a background child, or the
children of a killed, timed-out exec) are reaped instead of piling up as zombies under a
keep-alive such as ``sleep`` that never waits. ``alive`` is ``State.Running`` of the container:
the container stops when its keep-alive command exits.

Exec timeouts: ``exec_start`` cannot be cancelled, so on timeout the exec's process tree is
SIGKILLed on the host (``exec_inspect`` gives its host pid; the daemon is local), which closes its
output and frees the worker thread; the caller gets ``ExecTimeout`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import docker
import docker.errors
import requests.exceptions

from thunder_core.runtimes import RuntimeSpec
from thunder_scheduler.tools.base import (
    BackendRuntime,
    BackendUnavailable,
    BuildFailed,
    CreateFailed,
    ExecOutput,
    ExecTimeout,
    ImageInfo,
    ObservedRuntime,
    RuntimeLabels,
    RuntimeNotFound,
)

T = TypeVar("T")

DOCKER_API_VERSION: Final = "1.41"
BUILD_LOG_TAIL_CHARS: Final = 4000
REQUEST_TIMEOUT_S: Final = 120.0
"""Per HTTP call to dockerd; builds stream, so this bounds the silence, not the build."""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(child) for child in fh.read().split())
    return found


def _kill_tree(pid: int) -> None:
    stack, seen = [pid], []
    while stack:
        current = stack.pop()
        seen.append(current)
        stack.extend(_children(current))
    for victim in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)


class DockerBackend:
    name = "docker"

    def __init__(
        self, docker_host: str | None = None, *, publish_host: str = "127.0.0.1",
        concurrency: int = 8, init: bool = True,
    ) -> None:
        base_url = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.docker_host = base_url
        self.publish_host = publish_host
        self.init = init
        self._client = docker.DockerClient(
            base_url=base_url, version=DOCKER_API_VERSION, timeout=int(REQUEST_TIMEOUT_S),
            max_pool_size=2 * concurrency + 2,
        )
        self._api = self._client.api
        self._control = asyncio.Semaphore(concurrency)
        self._exec = asyncio.Semaphore(concurrency)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._control:
            return await self._thread(fn, *args, **kwargs)

    async def _thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise BackendUnavailable(f"docker daemon at {self.docker_host}: {exc}") from exc

    async def ping(self) -> None:
        await self._call(self._api.ping)

    # -- images ---------------------------------------------------------------------------

    async def build(self, spec: RuntimeSpec, spec_hash: str, label_prefix: str) -> ImageInfo:
        if spec.dockerfile is None:
            assert spec.image is not None
            try:
                attrs = await self._call(self._api.inspect_image, spec.image)
            except docker.errors.ImageNotFound as exc:
                raise BuildFailed(
                    f"image {spec.image!r} is not on the docker daemon (no registry pulls: "
                    "import or build it first, see scripts/setup_docker.sh)"
                ) from exc
            size_bytes = int(attrs.get("Size", 0))
            return ImageInfo(ref=spec.image, size_bytes=size_bytes, built_by_us=False)
        tag = f"{label_prefix}-spec-{spec.name}:{spec_hash[:16]}"
        with contextlib.suppress(docker.errors.ImageNotFound):
            attrs = await self._call(self._api.inspect_image, tag)
            return ImageInfo(ref=tag, size_bytes=int(attrs.get("Size", 0)), built_by_us=True)
        labels = {f"{label_prefix}.managed": "true", f"{label_prefix}.spec": spec.name,
                  f"{label_prefix}.spec-hash": spec_hash}
        await self._call(self._build_blocking, spec, tag, labels)
        attrs = await self._call(self._api.inspect_image, tag)
        return ImageInfo(ref=tag, size_bytes=int(attrs.get("Size", 0)), built_by_us=True)

    def _build_blocking(self, spec: RuntimeSpec, tag: str, labels: dict[str, str]) -> None:
        assert spec.dockerfile is not None
        if spec.context_dir is not None and not Path(spec.context_dir).is_dir():
            raise BuildFailed(f"context_dir {spec.context_dir!r} is not a directory")
        with tempfile.TemporaryDirectory(prefix="thunder-build-") as scratch:
            dockerfile = Path(scratch) / "Dockerfile"
            dockerfile.write_text(spec.dockerfile)
            context = spec.context_dir or scratch
            log: list[str] = []
            try:
                for chunk in self._api.build(
                    path=context, dockerfile=str(dockerfile), tag=tag, labels=labels, rm=True,
                    forcerm=True, decode=True, pull=False,
                ):
                    if "stream" in chunk:
                        log.append(str(chunk["stream"]))
                    if "error" in chunk:
                        raise BuildFailed(
                            f"building spec {spec.name!r} failed: {str(chunk['error']).strip()}",
                            detail="".join(log)[-BUILD_LOG_TAIL_CHARS:],
                        )
            except docker.errors.APIError as exc:
                raise BuildFailed(f"building spec {spec.name!r} failed: {exc}") from exc

    async def remove_image(self, image: ImageInfo) -> None:
        if not image.built_by_us:
            return
        with contextlib.suppress(docker.errors.ImageNotFound):
            await self._call(self._api.remove_image, image.ref, force=True)

    # -- runtimes -------------------------------------------------------------------------

    async def create(
        self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels, owner_key: str
    ) -> BackendRuntime:
        # until the daemon answers, the runtime is known by its (deterministic) name, so a
        # cancelled or failed create can still be removed
        runtime = BackendRuntime(
            labels.runtime_id, f"{labels.prefix}-{owner_key}-{labels.runtime_id}",
            self.publish_host, {},
            tuple(f"{labels.prefix}-{labels.runtime_id}-v{i}" for i in range(len(spec.volumes))),
        )
        try:
            runtime = await self._call(self._create_blocking, spec, image, labels, owner_key)
        except docker.errors.APIError as exc:
            await self.destroy(runtime)
            raise CreateFailed(f"creating a runtime of {spec.name!r} failed: {exc}") from exc
        except BaseException:
            await asyncio.shield(self.destroy(runtime))
            raise
        for command in spec.setup_commands:
            try:
                result = await self.exec(runtime, ["sh", "-c", command], timeout_s=600.0,
                                         workdir=None, env={})
            except BaseException as exc:
                await asyncio.shield(self.destroy(runtime))
                if isinstance(exc, ExecTimeout):
                    raise CreateFailed(f"setup command timed out: {command!r}") from exc
                raise
            if result.exit_code != 0:
                await self.destroy(runtime)
                raise CreateFailed(
                    f"setup command {command!r} exited {result.exit_code}",
                    detail=result.stderr.decode(errors="replace")[-BUILD_LOG_TAIL_CHARS:],
                )
        return runtime

    def _create_blocking(
        self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels, owner_key: str
    ) -> BackendRuntime:
        label_dict = {**spec.labels, **labels.as_dict()}
        volumes = []
        for i, path in enumerate(spec.volumes):
            name = f"{labels.prefix}-{labels.runtime_id}-v{i}"
            self._api.create_volume(name=name, labels=label_dict)
            volumes.append((name, path))
        host_config = self._api.create_host_config(
            binds={name: {"bind": path, "mode": "rw"} for name, path in volumes},
            port_bindings={port: (self.publish_host, None) for port in spec.ports},
            nano_cpus=int(spec.cpu_limit * 1e9) if spec.cpu_limit else None,
            mem_limit=spec.memory_limit_bytes,
            init=self.init,
        )
        created = self._api.create_container(
            image.ref, command=spec.command,
            name=f"{labels.prefix}-{owner_key}-{labels.runtime_id}",
            labels=label_dict, environment=spec.env, working_dir=spec.workdir,
            ports=list(spec.ports), host_config=host_config, detach=True,
        )
        ref = str(created["Id"])
        self._api.start(ref)
        ports: dict[int, int] = {}
        if spec.ports:
            bound = self._api.inspect_container(ref)["NetworkSettings"]["Ports"] or {}
            for key, bindings in bound.items():
                if bindings:
                    ports[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
        return BackendRuntime(
            labels.runtime_id, ref, self.publish_host, ports, tuple(n for n, _ in volumes)
        )

    async def assign(self, runtime: BackendRuntime, labels: RuntimeLabels, owner_key: str) -> None:
        try:
            await self._call(
                self._api.rename, runtime.ref, f"{labels.prefix}-{owner_key}-{labels.runtime_id}"
            )
        except docker.errors.APIError as exc:
            raise CreateFailed(f"cannot hand runtime {runtime.runtime_id} over: {exc}") from exc

    async def exec(
        self, runtime: BackendRuntime, argv: list[str], *, timeout_s: float,
        workdir: str | None, env: dict[str, str],
    ) -> ExecOutput:
        started = time.monotonic()
        async with self._exec:
            capture = f"/tmp/.thunder-exec-{uuid.uuid4().hex}"
            wrapped = ["sh", "-c", 'exec "$@" >"$0.out" 2>"$0.err"', capture, *argv]
            try:
                exec_id = (await self._thread(
                    self._api.exec_create, runtime.ref, wrapped, workdir=workdir,
                    environment=env or None,
                ))["Id"]
            except docker.errors.NotFound as exc:
                raise RuntimeNotFound(f"runtime {runtime.runtime_id} is gone: {exc}") from exc
            except docker.errors.APIError as exc:
                raise CreateFailed(f"exec in runtime {runtime.runtime_id} failed: {exc}") from exc
            task = asyncio.ensure_future(
                self._thread(self._api.exec_start, exec_id, demux=True)
            )
            try:
                stdout, stderr = await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    pid = int((await self._thread(self._api.exec_inspect, exec_id))["Pid"])
                    if pid > 0:
                        _kill_tree(pid)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10.0)
                with contextlib.suppress(Exception):
                    await self._thread(self._read_capture, runtime.ref, capture)
                raise ExecTimeout(f"exec exceeded {timeout_s} s and was killed") from None
            inspect = await self._thread(self._api.exec_inspect, exec_id)
            try:
                stdout, stderr = await self._thread(self._read_capture, runtime.ref, capture)
            except (docker.errors.APIError, KeyError, tarfile.TarError):
                pass  # keep what the attach stream gave
        code = inspect.get("ExitCode")
        return ExecOutput(
            int(code) if code is not None else -1, stdout or b"", stderr or b"",
            time.monotonic() - started,
        )

    def _read_capture(self, ref: str, capture: str) -> tuple[bytes, bytes]:
        """The captured stdout/stderr files of one exec, read via the archive API, then removed."""
        outputs: dict[str, bytes] = {}
        for suffix in ("out", "err"):
            stream, _stat = self._api.get_archive(ref, f"{capture}.{suffix}")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                extracted = tar.extractfile(member) if member is not None else None
                outputs[suffix] = extracted.read() if extracted is not None else b""
        with contextlib.suppress(docker.errors.APIError):
            cleanup = self._api.exec_create(ref, ["rm", "-f", f"{capture}.out", f"{capture}.err"])
            self._api.exec_start(cleanup["Id"])
        return outputs["out"], outputs["err"]

    async def alive(self, runtime: BackendRuntime) -> bool:
        try:
            attrs = await self._call(self._api.inspect_container, runtime.ref)
        except docker.errors.NotFound:
            return False
        state = attrs.get("State") or {}
        return bool(state.get("Running")) and not state.get("Restarting")

    async def destroy(self, runtime: BackendRuntime) -> None:
        await self._call(self._destroy_blocking, runtime)

    def _destroy_blocking(self, runtime: BackendRuntime) -> None:
        if runtime.ref:
            try:
                self._api.remove_container(runtime.ref, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc):
                    raise
                self._wait_gone(runtime.ref)
        for name in runtime.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_volume(name, force=True)

    def _wait_gone(self, ref: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self._api.inspect_container(ref)
            except docker.errors.NotFound:
                return
            time.sleep(0.05)

    async def list_runtimes(self, label_prefix: str) -> list[ObservedRuntime]:
        return await self._call(self._list_blocking, label_prefix)

    def _list_blocking(self, prefix: str) -> list[ObservedRuntime]:
        managed = f"{prefix}.managed=true"
        found: dict[str, ObservedRuntime] = {}
        for row in self._api.containers(all=True, size=True, filters={"label": managed}):
            labels = row.get("Labels") or {}
            runtime_id = labels.get(f"{prefix}.runtime", "")
            name = (row.get("Names") or ["/"])[0].lstrip("/")
            owner = ""
            if name.startswith(f"{prefix}-") and name.endswith(f"-{runtime_id}"):
                owner = name[len(prefix) + 1: -len(runtime_id) - 1]
            ports = {
                int(p["PrivatePort"]): int(p["PublicPort"])
                for p in row.get("Ports") or [] if p.get("PublicPort")
            }
            volumes = tuple(
                str(m["Name"]) for m in row.get("Mounts") or [] if m.get("Type") == "volume"
            )
            found[runtime_id] = ObservedRuntime(
                runtime_id=runtime_id, ref=str(row["Id"]),
                spec_name=labels.get(f"{prefix}.spec", ""),
                owner_key=owner, disk_bytes=int(row.get("SizeRw") or 0), ports=ports,
                volumes=volumes, running=row.get("State") == "running",
            )
        orphans: dict[str, list[str]] = {}
        for volume in (self._api.volumes(filters={"label": managed}) or {}).get("Volumes") or []:
            runtime_id = (volume.get("Labels") or {}).get(f"{prefix}.runtime", "")
            if runtime_id not in found:
                orphans.setdefault(runtime_id, []).append(str(volume["Name"]))
        for runtime_id, names in orphans.items():
            found[runtime_id] = ObservedRuntime(
                runtime_id=runtime_id, ref="", spec_name="", owner_key="", disk_bytes=0,
                volumes=tuple(names), running=False,
            )
        return list(found.values())

    def close(self) -> None:
        self._client.close()


__all__ = ["DOCKER_API_VERSION", "DockerBackend"]
