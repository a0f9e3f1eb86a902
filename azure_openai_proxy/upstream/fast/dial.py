"""Connecting to one of a host's addresses, RFC 8305's way ("Happy Eyeballs"): an address
that has not answered within `NEXT_ADDRESS_AFTER` has the next one tried beside it, one
that fails has the next tried at once, and the first connected wins (the others are
closed). Tried one after the other, an address whose packets are dropped (an IPv6 route
that goes nowhere, a host gone from a pool) took the whole connect_timeout, every new
connection, and the next address was never tried.

The usual host has one address: it is connected to directly, with no task."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["NEXT_ADDRESS_AFTER", "dial"]

# RFC 8305's Connection Attempt Delay, as aiohttp's client (Go's net.Dialer: 300 ms).
NEXT_ADDRESS_AFTER = 0.25

Connected = TypeVar("Connected")


async def dial(
    loop: asyncio.AbstractEventLoop, addresses: list[tuple[int, str]],
    connect: Callable[[str], Coroutine[Any, Any, Connected]], close: Callable[[Connected], None],
) -> Connected:
    """`connect(address)`'s result for the first address that connects; the last
    `OSError` when none does (another exception at once). `close` ends a connection
    made after another won, or when the caller gave up."""
    if len(addresses) == 1:
        return await connect(addresses[0][1])
    left = [address for _, address in addresses]
    running: set[asyncio.Task[Connected]] = set()
    failure: BaseException | None = None
    try:
        while left or running:
            if left:
                running.add(loop.create_task(connect(left.pop(0))))
            done, running = await asyncio.wait(
                running, timeout=NEXT_ADDRESS_AFTER if left else None,
                return_when=asyncio.FIRST_COMPLETED)
            won = _first_connected(done, close)
            if won is not None:
                return won[0]
            for task in done:
                failure = task.exception()
                if failure is not None and not isinstance(failure, OSError):
                    raise failure  # a bug of ours, not the network's
        assert failure is not None  # `addresses` is never empty
        raise failure
    finally:
        del failure  # not kept in this frame: a reference cycle through its traceback
        for task in running:  # a winner's rivals, or all when the caller gave up
            task.cancel()
            task.add_done_callback(functools.partial(_close_late, close=close))


def _first_connected(done: set[asyncio.Task[Connected]], close: Callable[[Connected], None]
                     ) -> tuple[Connected] | None:
    """The first of `done` that connected (in a tuple: a connection may be falsy); the
    others that did are closed."""
    won: tuple[Connected] | None = None
    for task in done:
        if task.exception() is None:
            if won is None:
                won = (task.result(),)
            else:
                close(task.result())
    return won


def _close_late(task: asyncio.Task[Connected], close: Callable[[Connected], None]) -> None:
    """A rival cancelled too late: it connected anyway."""
    if not task.cancelled() and task.exception() is None:
        close(task.result())
