"""FakeRuntimeBackend: an in-memory backend for fault-injection tests only.

It is not a sandbox: ``exec`` interprets a scripted subset of ``sh -c`` (``;``-separated
``echo``, ``echo ... > FILE``, ``cat``, ``exit N``, ``sleep S``, ``pwd``; ``$VAR`` expands) over a
per-runtime dict of files, which is enough for the shared conformance suite. Faults are switched
on by attributes: ``down`` (every call raises ``BackendUnavailable``), ``fail_build`` /
``fail_create`` / ``fail_setup`` / ``exiting_keepalive`` (sets of spec names),
``create_delay_s`` / ``build_delay_s``.
Counters (``builds``, ``creates``, ``creates_cancelled``, ``destroys``) let tests check
single-flight, cancellation and cleanup.
"""

from __future__ import annotations

import asyncio
import itertools
import shlex
import time
from dataclasses import dataclass, field

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


@dataclass
class _FakeRuntime:
    labels: RuntimeLabels
    owner_key: str
    workdir: str
    env: dict[str, str]
    ports: dict[int, int]
    volumes: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)
    exited: bool = False


class FakeRuntimeBackend:
    name = "fake"

    def __init__(self, *, image_bytes: int = 1 << 20) -> None:
        self.down = False
        self.fail_build: set[str] = set()
        self.fail_create: set[str] = set()
        self.fail_setup: set[str] = set()
        self.exiting_keepalive: set[str] = set()
        self.create_delay_s = 0.0
        self.build_delay_s = 0.0
        self.image_bytes = image_bytes
        self.builds = 0
        self.creates = 0
        self.creates_cancelled = 0
        self.destroys = 0
        self.images: dict[str, ImageInfo] = {}
        self.runtimes: dict[str, _FakeRuntime] = {}
        self._ids = itertools.count(1)
        self._ports = itertools.count(40000)

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable("fake backend is down (fault injected)")

    async def ping(self) -> None:
        self._check()

    async def build(self, spec: RuntimeSpec, spec_hash: str, label_prefix: str) -> ImageInfo:
        self._check()
        self.builds += 1
        if self.build_delay_s:
            await asyncio.sleep(self.build_delay_s)
        if spec.name in self.fail_build:
            raise BuildFailed(f"build of {spec.name} failed (fault injected)", detail="log: boom")
        ref = f"fake/{label_prefix}-{spec.name}:{spec_hash[:12]}"
        info = ImageInfo(ref, self.image_bytes, built_by_us=spec.dockerfile is not None)
        self.images[ref] = info
        return info

    async def remove_image(self, image: ImageInfo) -> None:
        self._check()
        self.images.pop(image.ref, None)

    async def create(
        self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels, owner_key: str
    ) -> BackendRuntime:
        self._check()
        self.creates += 1
        if self.create_delay_s:
            try:
                await asyncio.sleep(self.create_delay_s)
            except asyncio.CancelledError:
                self.creates_cancelled += 1
                raise
        if spec.name in self.fail_create:
            raise CreateFailed(f"create of {spec.name} failed (fault injected)")
        ref = f"fake-{next(self._ids)}"
        ports = {port: next(self._ports) for port in spec.ports}
        volumes = tuple(f"{ref}-v{i}" for i in range(len(spec.volumes)))
        self.runtimes[ref] = _FakeRuntime(
            labels, owner_key, spec.workdir, dict(spec.env), ports, volumes,
            exited=spec.name in self.exiting_keepalive,
        )
        runtime = BackendRuntime(labels.runtime_id, ref, "127.0.0.1", ports, volumes)
        if spec.name in self.fail_setup:
            await self.destroy(runtime)
            raise CreateFailed(f"setup of {spec.name} failed (fault injected)")
        for command in spec.setup_commands:
            result = await self.exec(runtime, ["sh", "-c", command], timeout_s=600.0,
                                     workdir=None, env={})
            if result.exit_code != 0:
                await self.destroy(runtime)
                raise CreateFailed(f"setup command {command!r} exited {result.exit_code}")
        return runtime

    async def assign(self, runtime: BackendRuntime, labels: RuntimeLabels, owner_key: str) -> None:
        self._check()
        self.runtimes[runtime.ref].owner_key = owner_key

    async def exec(
        self, runtime: BackendRuntime, argv: list[str], *, timeout_s: float,
        workdir: str | None, env: dict[str, str],
    ) -> ExecOutput:
        self._check()
        state = self.runtimes.get(runtime.ref)
        if state is None:
            raise RuntimeNotFound(f"runtime {runtime.runtime_id} is gone")
        script = argv[2] if argv[:2] == ["sh", "-c"] else shlex.join(argv)
        started = time.monotonic()
        out: list[bytes] = []
        err: list[bytes] = []
        code = 0
        for statement in script.split(";"):
            variables = {**state.env, **env}
            words = [variables.get(w[1:], "") if w.startswith("$") else w
                     for w in shlex.split(statement)]
            if not words:
                continue
            verb, args = words[0], words[1:]
            if verb == "sleep":
                remaining_s = timeout_s - (time.monotonic() - started)
                if float(args[0]) > remaining_s:
                    await asyncio.sleep(max(remaining_s, 0))
                    raise ExecTimeout(f"exec exceeded {timeout_s} s")
                await asyncio.sleep(float(args[0]))
            elif verb == "exit":
                code = int(args[0])
                break
            elif verb == "echo" and ">" in args:
                i = args.index(">")
                state.files[args[i + 1]] = (" ".join(args[:i]) + "\n").encode()
            elif verb == "echo":
                out.append((" ".join(args) + "\n").encode())
            elif verb == "cat":
                if args[0] not in state.files:
                    err.append(f"cat: {args[0]}: No such file or directory\n".encode())
                    code = 1
                else:
                    out.append(state.files[args[0]])
            elif verb == "pwd":
                out.append(((workdir or state.workdir) + "\n").encode())
            else:
                err.append(f"sh: {verb}: not found\n".encode())
                code = 127
        return ExecOutput(code, b"".join(out), b"".join(err), time.monotonic() - started)

    async def alive(self, runtime: BackendRuntime) -> bool:
        self._check()
        state = self.runtimes.get(runtime.ref)
        return state is not None and not state.exited

    async def destroy(self, runtime: BackendRuntime) -> None:
        self._check()
        if self.runtimes.pop(runtime.ref, None) is not None:
            self.destroys += 1

    async def list_runtimes(self, label_prefix: str) -> list[ObservedRuntime]:
        self._check()
        return [
            ObservedRuntime(
                runtime_id=state.labels.runtime_id, ref=ref, spec_name=state.labels.spec_name,
                owner_key=state.owner_key,
                disk_bytes=sum(len(data) for data in state.files.values()),
                ports=dict(state.ports), volumes=state.volumes,
            )
            for ref, state in self.runtimes.items()
            if state.labels.prefix == label_prefix
        ]


__all__ = ["FakeRuntimeBackend"]
