"""Waiting for a condition instead of sleeping for a guessed time.

`until(condition)` polls until `condition()` is true and fails the test with `message`
when `timeout` passes first; the timeout only bounds a hang, it is never the thing a
test measures. `until_async` is the same inside an event loop (it yields to the loop
between polls, so the code under test can run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["until", "until_async"]


def until(condition: Callable[[], object], timeout: float = 10.0, message: str = "",
          interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


async def until_async(condition: Callable[[], object], timeout: float = 10.0, message: str = "",
                      interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
