"""The pure engine model: KV pool, radix cache, continuous batching, retraction."""

from thunder_sim.engine.config import EngineConfig
from thunder_sim.engine.engine import Engine
from thunder_sim.engine.kv_pool import KVPool
from thunder_sim.engine.radix_cache import RadixCache
from thunder_sim.engine.types import (
    EngineCounters,
    EngineRequest,
    FinishedRequest,
    FinishReason,
    LoadSnapshot,
    StepResult,
    TokenProgress,
)

__all__ = [
    "Engine", "EngineConfig", "EngineCounters", "EngineRequest", "FinishReason",
    "FinishedRequest", "KVPool", "LoadSnapshot", "RadixCache", "StepResult", "TokenProgress",
]
