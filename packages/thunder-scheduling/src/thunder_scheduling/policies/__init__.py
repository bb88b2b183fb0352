"""Scheduling policies, one per module; the registry maps the config value to
``(PolicyClass, ConfigClass)``.

Each module ``policies/<name>.py`` defines a policy class whose ``name`` is ``<name>`` (built
as ``PolicyClass(config)``) and a frozen config dataclass that validates itself in
``__post_init__`` (``ConfigError`` naming the field). See ``policy.py`` for the hooks.

``round_robin`` and ``cache_aware`` (the engine-only and SGLang-router baselines) are written
separately; they are registered when their modules exist, under the class names
``RoundRobinPolicy``/``RoundRobinConfig`` and ``CacheAwarePolicy``/``CacheAwareConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any

from thunder_scheduling.policies.autellix import AutellixConfig, AutellixPolicy
from thunder_scheduling.policies.continuum import ContinuumConfig, ContinuumPolicy
from thunder_scheduling.policies.infercept import InferCeptConfig, InferCeptPolicy
from thunder_scheduling.policies.kvflow import KVFlowConfig, KVFlowPolicy
from thunder_scheduling.policies.sticky import StickyConfig, StickyPolicy
from thunder_scheduling.policies.thunder import ThunderConfig, ThunderPolicy
from thunder_scheduling.policies.thunderagent import ThunderAgentConfig, ThunderAgentPolicy

POLICIES: dict[str, tuple[type[Any], type[Any]]] = {
    "thunder": (ThunderPolicy, ThunderConfig),
    "sticky": (StickyPolicy, StickyConfig),
    "continuum": (ContinuumPolicy, ContinuumConfig),
    "autellix": (AutellixPolicy, AutellixConfig),
    "thunderagent": (ThunderAgentPolicy, ThunderAgentConfig),
    "infercept": (InferCeptPolicy, InferCeptConfig),
    "kvflow": (KVFlowPolicy, KVFlowConfig),
}

_OPTIONAL = {
    "round_robin": ("RoundRobinPolicy", "RoundRobinConfig"),
    "cache_aware": ("CacheAwarePolicy", "CacheAwareConfig"),
}

for _name, (_policy_cls, _config_cls) in _OPTIONAL.items():
    _module_name = f"{__name__}.{_name}"
    try:
        _module = importlib.import_module(_module_name)
    except ModuleNotFoundError as error:
        if error.name != _module_name:
            raise
        continue
    POLICIES[_name] = (getattr(_module, _policy_cls), getattr(_module, _config_cls))

__all__ = ["POLICIES"]
