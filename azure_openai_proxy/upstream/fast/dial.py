"""Connecting to one of a host's addresses, RFC 8305's way ("Happy Eyeballs"): an address
that has not answered within `NEXT_ADDRESS_AFTER` has the next one tried beside it, one
that fails has the next tried at once, and the first connected wins (the others are
closed). The families take turns, the first address's first. Tried one after the other,
an address whose packets are dropped (an IPv6 route that goes nowhere, a host gone from
a pool) took the whole connect_timeout, every new connection, and the next address was
never tried.

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
    left = _interleaved(addresses)
    running: set[asyncio.Task[Connected]] = set()
    done: set[asyncio.Task[Connected]] = set()
    failure: OSError | None = None
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
            failure = _failure(done) or failure
        assert failure is not None  # `addresses` is never empty
        raise failure
    finally:
        # Neither the failure nor the tasks holding it kept in this frame: a reference
        # cycle through its traceback (frames and failures lived until a full GC).
        del failure, done
        for task in running:  # a winner's rivals, or all when the caller gave up
            task.cancel()
            task.add_done_callback(functools.partial(_close_late, close=close))


def _failure(done: set[asyncio.Task[Connected]]) -> OSError | None:
    """The last failure of `done` (none of which connected); another exception than an
    `OSError`, a bug of ours and not the network's, is raised at once."""
    failure = None
    for task in done:
        exc = task.exception()
        if not isinstance(exc, OSError):
            raise exc if exc is not None else AssertionError("a connected rival")
        failure = exc
    return failure


def _interleaved(addresses: list[tuple[int, str]]) -> list[str]:
    """The addresses in their order, but the families taking turns, the first address's
    first (RFC 8305 4: `getaddrinfo` puts every IPv6 address before the IPv4 ones, so
    two IPv6 addresses dropping packets held IPv4 back for two delays)."""
    first = addresses[0][0]
    same = [address for family, address in addresses if family == first]
    other = [address for family, address in addresses if family != first]
    turns = [address for pair in zip(same, other, strict=False) for address in pair]
    return turns + same[len(other):] + other[len(same):]


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
