"""Route an OpenHands SDK agent's LLM requests through the scheduler, tagged with the program id.

The hook. ``openhands.sdk.llm.LLM`` builds the keyword arguments of every litellm call in two
methods: ``_prepare_transport_kwargs`` (chat completions, sync and async) and
``_build_responses_call_kwargs`` (the Responses API). Both return the final litellm kwargs,
after the SDK applied the conversation's call context (``apply_llm_call_context`` in
``openhands/sdk/llm/call_context.py``), which puts ``x-litellm-session-id: <conversation id>``
into ``extra_headers``. :func:`install` wraps those two methods; the wrapper calls the original
and then :func:`route_kwargs` edits the returned dict in place:

* ``extra_headers["X-Thunder-Program-Id"]`` = the value of ``x-litellm-session-id`` (the
  conversation id), unless the caller already set our header; requests without a session id
  (an ``LLM`` used outside a conversation) get no header and are passed through untagged;
* ``api_base`` = ``<scheduler>/v1`` when routing is on and the model's litellm provider speaks
  the OpenAI protocol (:data:`OPENAI_COMPATIBLE_PROVIDERS`); other providers (Anthropic,
  Bedrock, ...) keep their own endpoint: the scheduler is an OpenAI-compatible proxy;
* ``api_key`` = ``THUNDER_API_KEY`` when that variable is set (a scheduler with client keys).

Nothing else changes: the model name, the body (``prompt_cache_key`` included), retries and
timeouts stay the SDK's. Why these methods and not an httpx hook: they are the one place where
both the destination and the conversation id are known, and they cover the sync, async,
streaming and Responses paths; litellm's OpenAI provider would also need its client cache
invalidated if the URL were rewritten below it. :func:`install` checks that both methods
exist and raises :class:`HookUnavailable` naming the SDK version otherwise, so an SDK upgrade
that renames them fails loudly instead of silently bypassing the scheduler.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from thunder_core.contract import LITELLM_SESSION_HEADER, PROGRAM_ID_HEADER

API_KEY_ENV: Final = "THUNDER_API_KEY"

OPENAI_COMPATIBLE_PROVIDERS: Final = frozenset({
    "openai", "custom_openai", "openai_like", "hosted_vllm", "litellm_proxy",
    "text-completion-openai",
})
"""litellm provider names whose requests are OpenAI chat / Responses calls (litellm's
``provider_list``); only these are re-pointed at the scheduler."""

HOOKED_METHODS: Final = ("_prepare_transport_kwargs", "_build_responses_call_kwargs")
_ORIGINAL_ATTR: Final = "__thunder_original__"


class HookUnavailable(RuntimeError):
    """The installed openhands-sdk lacks the methods the toggle wraps."""


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """Where LLM requests go: ``api_base`` is ``<scheduler>/v1``, or None to only tag them."""

    api_base: str | None
    api_key: str | None = None


def route_kwargs(
    kwargs: MutableMapping[str, Any], config: RouteConfig, provider: str | None
) -> MutableMapping[str, Any]:
    """Tag (and route) one litellm call's kwargs in place; return them. See the module doc."""
    headers = kwargs.get("extra_headers")
    if headers:
        session_id = headers.get(LITELLM_SESSION_HEADER)
        if session_id and PROGRAM_ID_HEADER not in headers:
            kwargs["extra_headers"] = {**headers, PROGRAM_ID_HEADER: session_id}
    if config.api_base is not None and provider in OPENAI_COMPATIBLE_PROVIDERS:
        kwargs["api_base"] = config.api_base
        if config.api_key is not None:
            kwargs["api_key"] = config.api_key
    return kwargs


def _provider_of(llm: Any) -> str | None:
    info = getattr(llm, "_provider_info", None)
    name = getattr(info, "name", None)
    return name if isinstance(name, str) else None


def _wrap(original: Callable[..., Any], get_config: Callable[[], RouteConfig | None]
          ) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        config = get_config()
        if config is not None and isinstance(result, dict):
            route_kwargs(result, config, _provider_of(self))
        return result

    setattr(wrapper, _ORIGINAL_ATTR, original)
    return wrapper


def install(get_config: Callable[[], RouteConfig | None]) -> None:
    """Wrap the SDK's kwargs builders (idempotent). ``get_config()`` None: pass through."""
    from openhands.sdk.llm import LLM

    missing = [name for name in HOOKED_METHODS if not callable(getattr(LLM, name, None))]
    if missing:
        from importlib.metadata import version

        raise HookUnavailable(
            f"openhands-sdk {version('openhands-sdk')} has no LLM.{', LLM.'.join(missing)}; "
            "thunder-openhands supports openhands-sdk >=1.58,<2"
        )
    for name in HOOKED_METHODS:
        current = getattr(LLM, name)
        if hasattr(current, _ORIGINAL_ATTR):
            continue
        setattr(LLM, name, _wrap(current, get_config))


def uninstall() -> None:
    """Restore the SDK's own methods."""
    from openhands.sdk.llm import LLM

    for name in HOOKED_METHODS:
        current = getattr(LLM, name, None)
        original = getattr(current, _ORIGINAL_ATTR, None)
        if original is not None:
            setattr(LLM, name, original)


def api_key_from_env() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


__all__ = [
    "API_KEY_ENV",
    "HOOKED_METHODS",
    "OPENAI_COMPATIBLE_PROVIDERS",
    "HookUnavailable",
    "RouteConfig",
    "api_key_from_env",
    "install",
    "route_kwargs",
    "uninstall",
]
