"""Settings of the tool manager (one pydantic model; the service nests or maps it).

Defaults and where they come from:

- ``max_runtimes`` 64: live + warm + preparing runtimes; a 2-core CI machine runs ~50 idle
  busybox containers comfortably (measured in bench/tools), a real host raises it.
- ``disk_budget_bytes`` 50 GiB: ThunderAgent reports 0.8 TB after 300 OpenHands workflows
  *with* cleanup, i.e. ~2.7 GB per workflow; 50 GiB holds ~18 such sandboxes at once.
- ``build_concurrency`` 2: image builds are CPU- and disk-bound; more than the core count
  only slows each build down.
- ``docker_concurrency`` 8: blocking docker SDK calls run in threads; dockerd serialises much
  of its work, 8 in flight saturated it in our create/remove measurements (bench/tools).
- ``exec_timeout_s`` 600: the longest tool call in the shared traces is under 10 minutes.
- ``pool_check_interval_s`` 2.0: the backstop period at which pools below their target are
  refilled (refills also start at once whenever a hand-over happens or slots come free).
- ``docker_init`` True: run an init (``docker run --init``, tini as ``docker-init``) as PID 1
  of every container so the children that execs leave behind are reaped, not zombies of a
  keep-alive that never waits. Debian's ``docker.io`` ships it (it depends on ``tini``).
- ``queue_pool_max`` 16: the most warm runtimes per spec that queued programs may ask for;
  16 is twice the 8 creates ``docker_concurrency`` runs at once, so a burst of admissions
  drains at most half of it before refills land; the global ``max_runtimes`` still applies.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BackendName = Literal["docker", "local", "none"]

_LABEL_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,40}$")


class ToolManagerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: BackendName = Field(
        default="docker", description="where runtimes run (docker: containers, local: processes)"
    )
    docker_host: str | None = Field(
        default=None, description="e.g. unix:///tmp/thunder-docker/docker.sock; None: DOCKER_HOST"
    )
    local_root_dir: str | None = Field(
        default=None, description="local backend: where runtime directories live (None: a temp dir)"
    )
    label_prefix: str = Field(default="thunder", description="namespace of labels and names")
    publish_host: str = Field(default="127.0.0.1", description="host address ports bind to")
    max_runtimes: int = Field(
        default=64, ge=1, le=100_000, description="live + warm + preparing runtimes, at most"
    )
    disk_budget_bytes: int = Field(
        default=50 << 30, ge=0, description="disk the runtimes and images may use before GC"
    )
    build_concurrency: int = Field(
        default=2, ge=1, le=64, description="image builds run at once"
    )
    docker_concurrency: int = Field(
        default=8, ge=1, le=256, description="Docker API calls in flight at once"
    )
    exec_timeout_s: float = Field(
        default=600.0, gt=0, description="longest one tool command may run, seconds"
    )
    disk_poll_interval_s: float = Field(
        default=30.0, gt=0, description="how often disk usage is re-measured"
    )
    queue_pool_max: int = Field(
        default=16, ge=0, le=100_000,
        description="cap on the warm runtimes per spec raised by queued programs (0: off)",
    )
    pool_check_interval_s: float = Field(
        default=2.0, gt=0, description="backstop period of warm-pool refills"
    )
    docker_init: bool = Field(
        default=True, description="docker: run an init as PID 1 that reaps exec children"
    )
    prepare_on_admit: bool = Field(
        default=True, description="start a program's runtime when it is admitted or restoring"
    )
    ended_programs_memory: int = Field(
        default=10_000, ge=1, description="ended program ids remembered to refuse late acquires"
    )

    @field_validator("label_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not _LABEL_PREFIX_RE.match(value):
            raise ValueError("label_prefix must match [a-z0-9][a-z0-9.-]{0,40}")
        return value


__all__ = ["BackendName", "ToolManagerSettings"]
