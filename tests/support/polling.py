"""The one poller: wait for a condition without sleeping for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

POLL_INTERVAL = 0.005


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]], what: str = "the condition", timeout: float = 20.0
) -> T: ...


@overload
async def eventually(condition: Callable[[], T], what: str = "the condition", timeout: float = 20.0) -> T: ...


async def eventually(
    condition: Callable[[], object], what: str = "the condition", timeout: float = 20.0
) -> object:
    """Call `condition` (plain or async) until it gives something truthy and return that; fail naming
    `what` after `timeout` seconds. It polls on the event loop, so a service running in that loop keeps
    serving between calls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}; last: {result!r}")
        await asyncio.sleep(POLL_INTERVAL)
