"""``until()``: wait for a condition by polling it, with a deadline and a message that says
what was awaited and what was last seen (instead of sleeping and hoping)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["until", "until_async"]


def _expired(what: str, timeout_s: float, last: object) -> AssertionError:
    seen = repr(last)
    if len(seen) > 500:
        seen = seen[:500] + "..."
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last: {seen}")


def until(predicate: Callable[[], T], *, timeout_s: float = 5.0, interval_s: float = 0.05,
          what: str = "the condition") -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises ``AssertionError`` (naming ``what`` and the last value) after ``timeout_s``.
    The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _expired(what, timeout_s, value)
        time.sleep(interval_s)


async def until_async(predicate: Callable[[], T | Awaitable[T]], *, timeout_s: float = 5.0,
                      interval_s: float = 0.01, what: str = "the condition") -> T:
    """``until`` for code on an event loop: sleeps with ``asyncio.sleep`` between calls, so the
    tasks being waited for run. The predicate may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        value: T = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if loop.time() >= deadline:
            raise _expired(what, timeout_s, value)
        await asyncio.sleep(interval_s)
