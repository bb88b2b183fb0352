"""The toggle: ``enable()`` (or ``THUNDER_SCHEDULER_URL`` + the ``.pth`` autoload) puts every
OpenHands SDK conversation in this process under the scheduler.

What ``enable(scheduler_url)`` changes, and nothing else:

1. ``openhands.sdk.llm.LLM``'s two kwargs builders are wrapped (``thunder_openhands.routing``):
   requests made inside a conversation carry ``X-Thunder-Program-Id: <conversation id>`` next
   to the SDK's own ``x-litellm-session-id``, and OpenAI-compatible models are sent to
   ``<scheduler>/v1`` (``route=False`` only tags them, for an agent whose ``base_url`` already
   points at the scheduler).
2. ``LocalConversation.__init__`` / ``run`` / ``arun`` / ``close`` are wrapped to drive a
   ``ConversationTracker`` (``thunder_openhands.lifecycle``): program start at creation, tool
   start / end from the conversation's events (the tracker is appended to ``callbacks``),
   program end when a run finishes or fails and at ``close()``. Events go through one
   ``LifecycleEmitter`` (off the agent's thread, 2 s timeouts, a warning when lost).
3. A conversation created with a ``ThunderWorkspace`` takes the workspace's program id as its
   conversation id (when none is given) and releases the runtime at ``close()``.

Ordering: the program start is queued at conversation creation and never waited for. If the
first LLM request reaches the scheduler first, the scheduler starts the program from it and
adopts the metadata (framework ``openhands``, priority, tags) when the start event arrives.
One case does wait: a rerun of a conversation whose earlier run ended its program. Its first
request must not reach the scheduler before the earlier end event (it would be counted in the
ended program), so ``run()`` then waits for the queue once, at most
:data:`REOPEN_FLUSH_TIMEOUT_S`.

Process-wide state: the toggle patches classes, so it is one object per process
(``_active``), created by ``enable()`` and dropped by ``disable()``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from thunder_core.client import SCHEDULER_URL_ENV, normalise_base_url, scheduler_url_from_env
from thunder_core.contract import RUNTIME_SPEC_TAG
from thunder_core.emitter import LifecycleEmitter
from thunder_openhands import routing
from thunder_openhands.lifecycle import ConversationTracker, Emitter

log = logging.getLogger("thunder_openhands")

REOPEN_FLUSH_TIMEOUT_S: Final = 0.5
"""Longest wait in a rerun's ``run()`` for the previous end and the new start to be sent (a
POST to a live scheduler on loopback takes about a millisecond)."""

TRACKER_ATTR: Final = "_thunder_tracker"
_PATCHED: Final = ("__init__", "run", "arun", "close")


@dataclass
class _Active:
    base_url: str
    emitter: Emitter
    route: routing.RouteConfig
    priority: int
    owns_emitter: bool
    originals: dict[str, Any]


_active: _Active | None = None
_lock = threading.Lock()


def is_enabled() -> bool:
    return _active is not None


def scheduler_url() -> str | None:
    """The base URL (without ``/v1``) of the scheduler the toggle sends to, if enabled."""
    return _active.base_url if _active is not None else None


def tracker_of(conversation: Any) -> ConversationTracker | None:
    """The tracker the toggle attached to a conversation (None if it has none)."""
    tracker = getattr(conversation, TRACKER_ATTR, None)
    return tracker if isinstance(tracker, ConversationTracker) else None


def enable(
    scheduler_url: str | None = None,
    *,
    route: bool = True,
    priority: int = 0,
    emitter: Emitter | None = None,
    timeout_s: float = 2.0,
) -> None:
    """Put OpenHands SDK conversations under the scheduler (idempotent; see the module doc).

    ``scheduler_url`` defaults to ``THUNDER_SCHEDULER_URL``; ``route=False`` tags requests
    without re-pointing them; ``emitter`` replaces the ``LifecycleEmitter`` (tests, or one
    shared with other adapters). Raises ``ValueError`` without a URL and
    ``routing.HookUnavailable`` on an unsupported openhands-sdk.
    """
    global _active
    url = normalise_base_url(scheduler_url) if scheduler_url else scheduler_url_from_env()
    if not url:
        raise ValueError(f"no scheduler URL: pass scheduler_url or set {SCHEDULER_URL_ENV}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"scheduler URL must start with http:// or https://, got {url!r}")
    with _lock:
        if _active is not None:
            if _active.base_url == url:
                return
            raise RuntimeError(
                f"thunder-openhands is already enabled for {_active.base_url}; "
                "call disable() first"
            )
        config = routing.RouteConfig(
            api_base=f"{url}/v1" if route else None, api_key=routing.api_key_from_env()
        )
        routing.install(_route_config)
        from openhands.sdk.conversation.impl.local_conversation import LocalConversation

        originals = {name: LocalConversation.__dict__[name] for name in _PATCHED}
        owns = emitter is None
        active = _Active(
            url, emitter if emitter is not None else LifecycleEmitter(url, timeout_s=timeout_s),
            config, priority, owns, originals,
        )
        _patch(LocalConversation, originals)
        _active = active
    log.info("thunder-openhands: conversations go through %s", url)


def disable() -> None:
    """Undo ``enable()``: restore the SDK's methods and close the emitter we made."""
    global _active
    with _lock:
        active, _active = _active, None
        if active is None:
            return
        routing.uninstall()
        from openhands.sdk.conversation.impl.local_conversation import LocalConversation

        for name, original in active.originals.items():
            setattr(LocalConversation, name, original)
    if active.owns_emitter and isinstance(active.emitter, LifecycleEmitter):
        active.emitter.close()


def _route_config() -> routing.RouteConfig | None:
    active = _active
    return active.route if active is not None else None


def _flush(timeout_s: float) -> None:
    active = _active
    flush: Callable[..., Any] | None = getattr(active.emitter, "flush", None) if active else None
    if flush is not None:
        flush(timeout_s)


def _status_of(conversation: Any) -> str | None:
    try:
        status = conversation.state.execution_status
    except Exception:  # a half-initialised conversation: nothing to report
        return None
    return str(getattr(status, "value", status))


def _patch(cls: type[Any], originals: dict[str, Any]) -> None:
    init, run, arun, close = (originals[name] for name in _PATCHED)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        from thunder_openhands.workspace import ThunderWorkspace

        active = _active
        if active is None:
            init(self, *args, **kwargs)
            return
        workspace = kwargs.get("workspace")
        runtime_ws = workspace if isinstance(workspace, ThunderWorkspace) else None
        if runtime_ws is not None:
            wanted = kwargs.get("conversation_id")
            if wanted is None:
                kwargs["conversation_id"] = uuid.UUID(runtime_ws.program_id)
            elif str(wanted) != runtime_ws.program_id:
                raise ValueError(
                    f"conversation_id {wanted} differs from the ThunderWorkspace's program id "
                    f"{runtime_ws.program_id}: its runtime belongs to that program; leave "
                    "conversation_id out (the workspace's id is used) or pass program_id= to "
                    "ThunderWorkspace.acquire"
                )
        tracker = ConversationTracker(
            active.emitter, priority=active.priority, holds_runtime=runtime_ws is not None,
            tags={RUNTIME_SPEC_TAG: runtime_ws.spec} if runtime_ws is not None else None,
        )
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), tracker.on_event]
        init(self, *args, **kwargs)
        setattr(self, TRACKER_ATTR, tracker)
        tracker.bind(
            str(self.id),
            already_started=runtime_ws is not None and runtime_ws.program_started_by_us,
        )

    @functools.wraps(run)
    def run_(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker = tracker_of(self)
        if tracker is None:
            return run(self, *args, **kwargs)
        if tracker.before_run():
            _flush(REOPEN_FLUSH_TIMEOUT_S)
        try:
            result = run(self, *args, **kwargs)
        except BaseException as exc:
            tracker.after_run(_status_of(self), exc)
            raise
        tracker.after_run(_status_of(self))
        return result

    @functools.wraps(arun)
    async def arun_(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker = tracker_of(self)
        if tracker is None:
            return await arun(self, *args, **kwargs)
        if tracker.before_run():
            await asyncio.to_thread(_flush, REOPEN_FLUSH_TIMEOUT_S)
        try:
            result = await arun(self, *args, **kwargs)
        except BaseException as exc:
            tracker.after_run(_status_of(self), exc)
            raise
        tracker.after_run(_status_of(self))
        return result

    @functools.wraps(close)
    def close_(self: Any, *args: Any, **kwargs: Any) -> Any:
        from thunder_openhands.workspace import ThunderWorkspace

        try:
            return close(self, *args, **kwargs)
        finally:
            workspace = getattr(self, "workspace", None)
            if isinstance(workspace, ThunderWorkspace):
                workspace.release()
            tracker = tracker_of(self)
            if tracker is not None:
                tracker.closed()

    for name, method in (("__init__", __init__), ("run", run_), ("arun", arun_),
                         ("close", close_)):
        setattr(cls, name, method)


__all__ = [
    "disable",
    "enable",
    "is_enabled",
    "scheduler_url",
    "tracker_of",
]
