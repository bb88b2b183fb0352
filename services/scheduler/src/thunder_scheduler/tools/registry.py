"""Backend selection: ``make_backend(settings)`` from an explicit table (house style)."""

from __future__ import annotations

from collections.abc import Callable

from thunder_scheduler.extras import require_extra
from thunder_scheduler.tools.base import RuntimeBackend
from thunder_scheduler.tools.local_process import LocalProcessBackend
from thunder_scheduler.tools.settings import BackendName, ToolManagerSettings


def _docker(settings: ToolManagerSettings) -> RuntimeBackend:
    require_extra("docker", "the docker tool backend")
    from thunder_scheduler.tools.docker import DockerBackend

    return DockerBackend(settings.docker_host, publish_host=settings.publish_host,
                         concurrency=settings.docker_concurrency, init=settings.docker_init)


def _local(settings: ToolManagerSettings) -> RuntimeBackend:
    return LocalProcessBackend(settings.local_root_dir, publish_host=settings.publish_host)


BACKENDS: dict[BackendName, Callable[[ToolManagerSettings], RuntimeBackend]] = {
    "docker": _docker,
    "local": _local,
}


def make_backend(settings: ToolManagerSettings) -> RuntimeBackend | None:
    """The configured backend, or None for ``backend="none"`` (every call answers 503)."""
    factory = BACKENDS.get(settings.backend)
    return factory(settings) if factory is not None else None


__all__ = ["BACKENDS", "make_backend"]
