"""The tool-runtime API: request/response models and client helpers.

A *runtime spec* describes an agent sandbox (an image, or a Dockerfile built on the scheduler's
host; environment; limits; ports; volumes; working directory; setup commands). A *runtime* is
one live sandbox made from a spec; it belongs to exactly one program and is torn down when that
program ends (or when it is released). Paths are in ``thunder_core.contract.Paths``:

- ``POST /v1/runtime-specs`` registers a spec (admin); ``GET`` lists / shows them;
- ``POST /v1/programs/{id}/runtimes`` acquires a ready runtime of a spec;
- ``POST /v1/programs/{id}/runtimes/{rid}/exec`` runs a command in it;
- ``DELETE /v1/programs/{id}/runtimes/{rid}`` releases it.

``RuntimeClient`` / ``AsyncRuntimeClient`` wrap ``ThunderClient.request`` so the errors are the
lifecycle client's: ``ThunderAPIError`` (404 unknown spec/program/runtime, 409 conflict,
503 backend down or budget exhausted, 504 exec timeout) and ``ThunderUnavailable``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thunder_core.client import AsyncThunderClient, ThunderClient
from thunder_core.contract import Paths

SPEC_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
"""Spec names become parts of image tags and container names, so Docker's rules apply."""

EXEC_OUTPUT_LIMIT_BYTES: Final = 1 << 20
"""stdout and stderr are each cut to 1 MiB (the tail is kept) so a chatty tool cannot flood the
scheduler's memory; ``*_truncated`` says when that happened."""

EXEC_HTTP_MARGIN_S: Final = 10.0
"""The HTTP timeout of an exec call is the command's timeout plus this margin."""

SpecName = Annotated[str, Field(min_length=1, max_length=63)]


class RuntimeSpec(BaseModel):
    """A sandbox recipe. Give ``image`` (present on the backend), or ``dockerfile`` (text,
    usually ``FROM`` such an image) with an optional ``context_dir`` on the scheduler host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SpecName
    image: str | None = Field(default=None, max_length=512)
    dockerfile: str | None = Field(default=None, max_length=1 << 20)
    context_dir: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = Field(default="/work", min_length=1, max_length=4096)
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list, max_length=32)
    volumes: list[Annotated[str, Field(min_length=2, max_length=4096)]] = Field(
        default_factory=list, max_length=16,
        description="container paths; each gets its own volume, removed with the runtime",
    )
    setup_commands: list[str] = Field(default_factory=list, max_length=64)
    command: list[str] = Field(
        default_factory=lambda: ["sleep", "2147483647"], min_length=1,
        description="the keep-alive process of the sandbox",
    )
    cpu_limit: float | None = Field(default=None, gt=0, le=1024, description="cores")
    memory_limit_bytes: int | None = Field(default=None, ge=4 << 20)
    pool_size: int = Field(default=0, ge=0, le=1024, description="warm pool target")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not SPEC_NAME_RE.match(value):
            raise ValueError(
                "spec name must match [a-z0-9][a-z0-9_.-]{0,62} (it becomes an image tag)"
            )
        return value

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("workdir must be an absolute path")
        return value

    @field_validator("volumes")
    @classmethod
    def _absolute_volumes(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"volume path {path!r} must be absolute")
        if len(set(value)) != len(value):
            raise ValueError("volume paths must be distinct")
        return value

    @model_validator(mode="after")
    def _image_or_dockerfile(self) -> RuntimeSpec:
        if self.image is None and self.dockerfile is None:
            raise ValueError("a spec needs an image or a dockerfile")
        if self.context_dir is not None and self.dockerfile is None:
            raise ValueError("context_dir only makes sense with a dockerfile")
        return self


ImageState = Literal["pending", "building", "ready", "failed", "evicted"]


class RuntimeSpecView(BaseModel):
    """A registered spec and the state of its image and warm pool."""

    spec: RuntimeSpec
    spec_hash: str
    image_state: ImageState
    image_ref: str | None = None
    image_bytes: int = 0
    image_error: str | None = None
    pool_ready: int = 0
    pool_target: int = 0
    live_runtimes: int = 0


class RuntimeSpecList(BaseModel):
    specs: list[RuntimeSpecView]


class AcquireRuntime(BaseModel):
    """``POST /v1/programs/{id}/runtimes`` body."""

    model_config = ConfigDict(extra="forbid")
    spec: SpecName


RuntimeSource = Literal["prepared", "pool", "cold", "adopted"]


class RuntimeView(BaseModel):
    """A runtime held by a program."""

    runtime_id: str
    program_id: str
    spec: str
    backend: str
    container_id: str
    exec_path: str = Field(description="the exec endpoint, relative to the scheduler's base URL")
    host: str = Field(description="where published ports listen")
    ports: dict[str, int] = Field(
        default_factory=dict, description="container port -> host port"
    )
    source: RuntimeSource
    created_at: float
    acquire_s: float = Field(description="acquire-to-ready time of this acquire call")
    disk_bytes: int = Field(default=0, description="writable layer + volumes, last measured")


class RuntimeList(BaseModel):
    runtimes: list[RuntimeView]


class ExecRequest(BaseModel):
    """``POST .../runtimes/{rid}/exec`` body. A string command runs under ``sh -c``."""

    model_config = ConfigDict(extra="forbid")
    command: str | list[str]
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    workdir: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, list) and not value[0]):
            raise ValueError("command must not be empty")
        return value


class ExecResult(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False


def _exec_body(
    command: str | list[str], timeout_s: float | None, workdir: str | None,
    env: dict[str, str] | None,
) -> dict[str, Any]:
    request = ExecRequest(command=command, timeout_s=timeout_s, workdir=workdir, env=env or {})
    return request.model_dump(exclude_none=True)


def _http_timeout(timeout_s: float | None, default_s: float) -> float:
    return (timeout_s if timeout_s is not None else default_s) + EXEC_HTTP_MARGIN_S


class RuntimeClient:
    """Blocking helpers for the runtime API on top of a ``ThunderClient``.

    ``acquire_timeout_s`` bounds an acquire call (a cold start may build an image);
    ``default_exec_timeout_s`` is only used for the HTTP timeout when an exec names none.
    """

    def __init__(
        self, client: ThunderClient, *, acquire_timeout_s: float = 600.0,
        default_exec_timeout_s: float = 600.0,
    ) -> None:
        self.client = client
        self.acquire_timeout_s = acquire_timeout_s
        self.default_exec_timeout_s = default_exec_timeout_s

    def register_spec(self, spec: RuntimeSpec) -> RuntimeSpecView:
        body = spec.model_dump(exclude_none=True)
        return RuntimeSpecView.model_validate(
            self.client.request("POST", Paths.RUNTIME_SPECS, body)
        )

    def list_specs(self) -> list[RuntimeSpecView]:
        return RuntimeSpecList.model_validate(
            self.client.request("GET", Paths.RUNTIME_SPECS)
        ).specs

    def get_spec(self, name: str) -> RuntimeSpecView:
        path = f"{Paths.RUNTIME_SPECS}/{name}"
        return RuntimeSpecView.model_validate(self.client.request("GET", path))

    def acquire(self, program_id: str, spec: str) -> RuntimeView:
        path = Paths.RUNTIMES.format(program_id=program_id)
        body = AcquireRuntime(spec=spec).model_dump()
        return RuntimeView.model_validate(
            self.client.request("POST", path, body, timeout_s=self.acquire_timeout_s)
        )

    def list_runtimes(self, program_id: str) -> list[RuntimeView]:
        path = Paths.RUNTIMES.format(program_id=program_id)
        return RuntimeList.model_validate(self.client.request("GET", path)).runtimes

    def exec(
        self, program_id: str, runtime_id: str, command: str | list[str], *,
        timeout_s: float | None = None, workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        path = Paths.RUNTIME_EXEC.format(program_id=program_id, runtime_id=runtime_id)
        body = _exec_body(command, timeout_s, workdir, env)
        http_timeout_s = _http_timeout(timeout_s, self.default_exec_timeout_s)
        return ExecResult.model_validate(
            self.client.request("POST", path, body, timeout_s=http_timeout_s)
        )

    def release(self, program_id: str, runtime_id: str) -> None:
        path = Paths.RUNTIME.format(program_id=program_id, runtime_id=runtime_id)
        self.client.request("DELETE", path, timeout_s=self.acquire_timeout_s)


class AsyncRuntimeClient:
    """Asyncio helpers for the runtime API on top of an ``AsyncThunderClient``."""

    def __init__(
        self, client: AsyncThunderClient, *, acquire_timeout_s: float = 600.0,
        default_exec_timeout_s: float = 600.0,
    ) -> None:
        self.client = client
        self.acquire_timeout_s = acquire_timeout_s
        self.default_exec_timeout_s = default_exec_timeout_s

    async def register_spec(self, spec: RuntimeSpec) -> RuntimeSpecView:
        body = spec.model_dump(exclude_none=True)
        return RuntimeSpecView.model_validate(
            await self.client.request("POST", Paths.RUNTIME_SPECS, body)
        )

    async def list_specs(self) -> list[RuntimeSpecView]:
        return RuntimeSpecList.model_validate(
            await self.client.request("GET", Paths.RUNTIME_SPECS)
        ).specs

    async def get_spec(self, name: str) -> RuntimeSpecView:
        path = f"{Paths.RUNTIME_SPECS}/{name}"
        return RuntimeSpecView.model_validate(await self.client.request("GET", path))

    async def acquire(self, program_id: str, spec: str) -> RuntimeView:
        path = Paths.RUNTIMES.format(program_id=program_id)
        body = AcquireRuntime(spec=spec).model_dump()
        return RuntimeView.model_validate(
            await self.client.request("POST", path, body, timeout_s=self.acquire_timeout_s)
        )

    async def list_runtimes(self, program_id: str) -> list[RuntimeView]:
        path = Paths.RUNTIMES.format(program_id=program_id)
        return RuntimeList.model_validate(await self.client.request("GET", path)).runtimes

    async def exec(
        self, program_id: str, runtime_id: str, command: str | list[str], *,
        timeout_s: float | None = None, workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        path = Paths.RUNTIME_EXEC.format(program_id=program_id, runtime_id=runtime_id)
        body = _exec_body(command, timeout_s, workdir, env)
        http_timeout_s = _http_timeout(timeout_s, self.default_exec_timeout_s)
        return ExecResult.model_validate(
            await self.client.request("POST", path, body, timeout_s=http_timeout_s)
        )

    async def release(self, program_id: str, runtime_id: str) -> None:
        path = Paths.RUNTIME.format(program_id=program_id, runtime_id=runtime_id)
        await self.client.request("DELETE", path, timeout_s=self.acquire_timeout_s)


__all__ = [
    "EXEC_OUTPUT_LIMIT_BYTES",
    "SPEC_NAME_RE",
    "AcquireRuntime",
    "AsyncRuntimeClient",
    "ExecRequest",
    "ExecResult",
    "ImageState",
    "RuntimeClient",
    "RuntimeList",
    "RuntimeSource",
    "RuntimeSpec",
    "RuntimeSpecList",
    "RuntimeSpecView",
    "RuntimeView",
]
