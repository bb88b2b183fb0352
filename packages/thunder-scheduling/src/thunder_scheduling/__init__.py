"""The pure scheduling core: fed events and a clock, returns commands. No I/O, no asyncio.

The same objects run in the live service (wrapped by ``thunder_scheduler.driver``) and in the
simulator's virtual mode. A ruff banned-API rule keeps asyncio, time, random, httpx, fastapi
and docker out of this package.
"""

from thunder_scheduling.config import ConfigError, SchedulerConfig
from thunder_scheduling.interface import SchedulingCore
from thunder_scheduling.registry import DEFAULT_POLICY, make_scheduler, policy_names
from thunder_scheduling.scheduler import ProgramScheduler, UnknownProgram
from thunder_scheduling.snapshot import SchedulerSnapshot

__all__ = [
    "DEFAULT_POLICY",
    "ConfigError",
    "ProgramScheduler",
    "SchedulerConfig",
    "SchedulerSnapshot",
    "SchedulingCore",
    "UnknownProgram",
    "make_scheduler",
    "policy_names",
]
