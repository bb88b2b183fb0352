"""The runtime backend interface: what the tool manager needs from a sandbox provider.

A backend turns a ``RuntimeSpec`` into an *image* (``build``), an image into a running
*runtime* (``create``), runs commands in it (``exec``), measures it (``list_runtimes``) and
removes it with everything it holds (``destroy``: container, volumes, published ports,
processes). It keeps no ownership state of its own: ownership travels on the runtime itself
(labels and name), so a freshly started manager can reconcile after a crash by listing.

Ownership encoding (``RuntimeLabels``): every runtime carries ``<prefix>.managed``,
``<prefix>.runtime`` and ``<prefix>.spec``; its *owner key* is ``pool`` while it sits in a warm
pool and ``program_key(program_id)`` once a program holds it. Docker cannot relabel a container,
so ``assign`` records the owner in a mutable place (the container name for Docker, a metadata
file for the local backend); ``list_runtimes`` reads it back.

Implementations, one per module: ``docker.py`` (docker SDK), ``local_process.py`` (a working
directory and subprocesses); the test kit's ``thunder_testkit.runtimes`` is an in-memory one
for fault injection. A Kubernetes pod backend maps onto the same eight methods (see
docs/tool-manager.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from thunder_core.runtimes import RuntimeSpec

POOL_OWNER: Final = "pool"
"""Owner key of a runtime that sits in a warm pool."""

PROGRAM_KEY_HEX_CHARS: Final = 24
"""96 bits of SHA-256: program ids (up to 256 characters) must fit into container names."""


def program_key(program_id: str) -> str:
    """The owner key of ``program_id``: a fixed-length hex digest, safe in names and labels."""
    return hashlib.sha256(program_id.encode()).hexdigest()[:PROGRAM_KEY_HEX_CHARS]


# -- errors -----------------------------------------------------------------------------------


class ToolError(Exception):
    """Base of the tool manager's errors; ``status_code`` is the HTTP answer it maps to."""

    status_code: int = 500
    error: str = "tool manager error"

    def __init__(self, message: str | None = None, detail: object = None) -> None:
        super().__init__(message or self.error)
        self.message = message or self.error
        self.detail = detail


class SpecNotFound(ToolError):
    status_code = 404
    error = "unknown runtime spec"


class ProgramNotFound(ToolError):
    status_code = 404
    error = "unknown program"


class RuntimeNotFound(ToolError):
    status_code = 404
    error = "unknown runtime"


class RuntimeConflict(ToolError):
    status_code = 409
    error = "conflict"


class BuildFailed(ToolError):
    """The spec's image could not be built (or the named image does not exist)."""

    status_code = 409
    error = "image build failed"


class CreateFailed(ToolError):
    """The runtime could not be created or its setup commands failed; nothing is left behind."""

    status_code = 409
    error = "runtime creation failed"


class BackendUnavailable(ToolError):
    status_code = 503
    error = "runtime backend unavailable"


class BudgetExhausted(ToolError):
    status_code = 503
    error = "runtime budget exhausted"


class ExecTimeout(ToolError):
    status_code = 504
    error = "exec timed out"


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A built (or found) image: ``ref`` is what ``create`` starts from."""

    ref: str
    size_bytes: int
    built_by_us: bool


@dataclass(frozen=True, slots=True)
class RuntimeLabels:
    """What a runtime carries so that any later manager can tell whose it is."""

    prefix: str
    runtime_id: str
    spec_name: str
    spec_hash: str

    def as_dict(self) -> dict[str, str]:
        return {
            f"{self.prefix}.managed": "true",
            f"{self.prefix}.runtime": self.runtime_id,
            f"{self.prefix}.spec": self.spec_name,
            f"{self.prefix}.spec-hash": self.spec_hash,
        }


@dataclass(frozen=True, slots=True)
class BackendRuntime:
    """A live runtime as the backend made it. ``ref`` is the backend's handle (container id,
    directory, pod name); ``ports`` maps container port to host port."""

    runtime_id: str
    ref: str
    host: str
    ports: dict[int, int] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedRuntime:
    """One runtime found by ``list_runtimes``: for reconcile and disk accounting."""

    runtime_id: str
    ref: str
    spec_name: str
    owner_key: str
    disk_bytes: int
    ports: dict[int, int] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    running: bool = True


@dataclass(frozen=True, slots=True)
class ExecOutput:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float


# -- the interface ----------------------------------------------------------------------------


@runtime_checkable
class RuntimeBackend(Protocol):
    """A sandbox provider. All methods may raise ``BackendUnavailable``."""

    name: str

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers."""

    async def build(self, spec: RuntimeSpec, spec_hash: str, label_prefix: str) -> ImageInfo:
        """Make the image of ``spec`` available; raise ``BuildFailed`` with the build log."""

    async def remove_image(self, image: ImageInfo) -> None:
        """Remove an image this backend built; a missing image is not an error."""

    async def create(
        self, spec: RuntimeSpec, image: ImageInfo, labels: RuntimeLabels, owner_key: str
    ) -> BackendRuntime:
        """Start a runtime and run the spec's setup commands. On any failure remove whatever
        was made and raise ``CreateFailed`` (or ``BackendUnavailable``)."""

    async def assign(self, runtime: BackendRuntime, labels: RuntimeLabels, owner_key: str) -> None:
        """Record a new owner key on a live runtime (a pool runtime handed to a program)."""

    async def exec(
        self, runtime: BackendRuntime, argv: list[str], *, timeout_s: float,
        workdir: str | None, env: dict[str, str],
    ) -> ExecOutput:
        """Run ``argv`` to completion; on timeout kill it and raise ``ExecTimeout``."""

    async def alive(self, runtime: BackendRuntime) -> bool:
        """Whether the runtime's keep-alive process (the spec's ``command``) still runs."""

    async def destroy(self, runtime: BackendRuntime) -> None:
        """Remove the runtime, its volumes and ports, and every process in it. Idempotent."""

    async def list_runtimes(self, label_prefix: str) -> list[ObservedRuntime]:
        """Every runtime carrying ``<label_prefix>.managed``, with its writable disk bytes."""


__all__ = [
    "POOL_OWNER",
    "BackendRuntime",
    "BackendUnavailable",
    "BudgetExhausted",
    "BuildFailed",
    "CreateFailed",
    "ExecOutput",
    "ExecTimeout",
    "ImageInfo",
    "ObservedRuntime",
    "ProgramNotFound",
    "RuntimeBackend",
    "RuntimeConflict",
    "RuntimeLabels",
    "RuntimeNotFound",
    "SpecNotFound",
    "ToolError",
    "program_key",
]
