"""Usage parity under streaming dispatch: a streamed call reports the usage an unstreamed one would.

Streaming dispatch makes a model call stream that would not have streamed by itself (the
dispatcher is a streaming callback handler). ``langchain_openai``'s ``ChatOpenAI`` reports
``usage_metadata`` on an unstreamed call whenever the server returns ``usage``, but on a streamed
call only when it asks for it (``stream_usage=True``, which sends
``stream_options.include_usage``; ``BaseChatOpenAI._should_stream_usage`` reads the call's
``stream_usage`` / ``stream_options`` kwargs, then ``model_kwargs``, then the model's own
``stream_usage``, default off for a custom ``base_url``). So with dispatch on, the final
``AIMessage`` would lose its usage.

``install()`` wraps ``BaseChatOpenAI._stream`` / ``_astream`` (the chat-completions path that
``ChatOpenAI._stream`` delegates to): when a call streams *only because of* the dispatcher
(a ``StreamingToolDispatcher`` among the run's handlers, no other streaming handler, the model's
``streaming`` not set) and the call says nothing about stream usage itself (no ``stream_usage``
or ``stream_options`` kwarg or ``model_kwargs`` entry), it passes ``stream_usage=True``. A call
that would have streamed anyway (``stream_mode="messages"``, ``astream_events``,
``streaming=True``) keeps the user's own setting, as the unmodified graph does. The scheduler's
proxy forwards the usage chunk to a client that asked for it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from thunder_langgraph.dispatch import StreamingToolDispatcher

logger = logging.getLogger(__name__)

_installed: list[bool] = []


def _handlers(run_manager: Any) -> list[Any]:
    """The model run's handlers: its run manager's when the caller passes it to ``_stream``,
    else the ones it inherited from the current child config (``_generate_with_cache`` calls
    ``_stream`` without its run manager)."""
    handlers = getattr(run_manager, "handlers", None)
    if handlers is not None:
        return list(handlers)
    callbacks = (var_child_runnable_config.get() or {}).get("callbacks")
    if isinstance(callbacks, list):
        return callbacks
    return list(getattr(callbacks, "handlers", None) or ())


def streams_only_for_dispatch(model: Any, run_manager: Any, kwargs: dict[str, Any]) -> bool:
    """This call streams because a dispatcher is attached, and sets no stream usage itself."""
    if "stream_usage" in kwargs or "stream_options" in kwargs or kwargs.get("stream"):
        return False
    if "stream_options" in (getattr(model, "model_kwargs", None) or {}):
        return False
    if getattr(model, "streaming", False) is True:
        return False
    dispatching = False
    for handler in _handlers(run_manager):
        if isinstance(handler, StreamingToolDispatcher):
            dispatching = True
        elif isinstance(handler, _StreamingCallbackHandler):
            return False  # something else streams this call: the user's own setting holds
    return dispatching


def install() -> bool:
    """Wrap ``BaseChatOpenAI``'s streaming (idempotent). False while ``langchain_openai`` is not
    imported: a graph whose model is a ``ChatOpenAI`` has imported it before it runs, and this
    is called again on every dispatching run, so nobody else pays for the import."""
    if _installed:
        return True
    module = sys.modules.get("langchain_openai.chat_models.base")
    if module is None:
        return False
    BaseChatOpenAI = module.BaseChatOpenAI
    sync_stream = BaseChatOpenAI._stream
    async_stream = BaseChatOpenAI._astream

    def _stream(self: Any, messages: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Any:
        if streams_only_for_dispatch(self, run_manager, kwargs):
            kwargs["stream_usage"] = True
        return sync_stream(self, messages, stop, run_manager, **kwargs)

    def _astream(self: Any, messages: Any, stop: Any = None, run_manager: Any = None,
                 **kwargs: Any) -> Any:
        if streams_only_for_dispatch(self, run_manager, kwargs):
            kwargs["stream_usage"] = True
        return async_stream(self, messages, stop, run_manager, **kwargs)

    BaseChatOpenAI._stream = _stream
    BaseChatOpenAI._astream = _astream
    _installed.append(True)
    return True
