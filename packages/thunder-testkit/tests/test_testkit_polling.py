"""``until`` / ``until_async``: return the first truthy value; on timeout, say what was awaited."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from thunder_testkit import until, until_async


def test_until_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert until(lambda: [n] if (n := next(calls)) >= 3 else [], interval_s=0.0) == [3]


def test_until_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the pool; last: \{'ready': 0\}"):
        until(_falsy_dict, timeout_s=0.0, what="the pool")


class _FalsyDict(dict[str, int]):
    def __bool__(self) -> bool:
        return False


def _falsy_dict() -> _FalsyDict:
    return _FalsyDict(ready=0)


async def test_until_async_lets_the_awaited_task_run() -> None:
    done: list[int] = []

    async def worker() -> None:
        await asyncio.sleep(0)
        done.append(1)

    task = asyncio.create_task(worker())
    assert await until_async(lambda: done) == [1]
    await task


async def test_until_async_times_out_with_a_message() -> None:
    with pytest.raises(AssertionError, match="timed out after 0 s waiting for nothing"):
        await until_async(lambda: False, timeout_s=0.0, what="nothing")


async def test_until_async_awaits_a_coroutine_predicate() -> None:
    calls = itertools.count(1)

    async def third_call() -> int:
        await asyncio.sleep(0)
        n = next(calls)
        return n if n >= 3 else 0

    assert await until_async(third_call) == 3
