"""One ``LifecycleEmitter`` per scheduler URL, shared by every wrapped graph in the process."""

from __future__ import annotations

import threading

from thunder_core import LifecycleEmitter, scheduler_url_from_env
from thunder_core.client import normalise_base_url

_lock = threading.Lock()
_emitters: dict[str, LifecycleEmitter] = {}


def emitter_for(scheduler_url: str | None) -> LifecycleEmitter:
    """The emitter for ``scheduler_url`` (or ``THUNDER_SCHEDULER_URL``), created on first use."""
    url = scheduler_url or scheduler_url_from_env()
    if not url:
        raise ValueError(
            "no scheduler URL: pass scheduler_url=... or set THUNDER_SCHEDULER_URL"
        )
    key = normalise_base_url(url)
    with _lock:
        emitter = _emitters.get(key)
        if emitter is None:
            emitter = _emitters[key] = LifecycleEmitter(key)
        return emitter
