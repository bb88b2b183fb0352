"""Shared fixtures for the cross-package end-to-end tests (one module per real part)."""

from fixtures.docker_daemon import *  # noqa: F403
from fixtures.fake_openai import *  # noqa: F403
from fixtures.llama_engines import *  # noqa: F403
from fixtures.scheduler_service import *  # noqa: F403
from fixtures.sim_fleet import *  # noqa: F403
