"""The HTTP/2 connections to one origin: which has room for a stream, the one being
opened (requests arriving together share it), and requests waiting for room when
`pool_size` connections are all full."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from azure_openai_proxy.upstream.h2.connection import _H2Connection

__all__ = ["_OriginPool"]


class _OriginPool:
    """Connections to one (scheme, host, port), oldest first: streams go to the first
    with room, so a few connections carry them all and the rest can idle out. `limit`
    bounds the connections (0: none)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, limit: int) -> None:
        self.loop = loop
        self.host = host
        self.limit = limit
        self.conns: list[_H2Connection] = []
        # Connections being opened; the newest takes the claims of requests arriving.
        self.openings: set[asyncio.Task[_H2Connection | None]] = set()
        self.opening: asyncio.Task[_H2Connection | None] | None = None
        self.claims = 0  # requests waiting for `opening`, counted against its room
        self.waiters: list[asyncio.Future[None]] = []  # for room, at `limit` connections
        self.http1 = False  # an https origin whose ALPN did not choose h2

    def room(self) -> _H2Connection | None:
        for conn in self.conns:
            if conn.has_room():
                return conn
        return None

    def full(self) -> bool:
        """No new connection allowed: `limit` open or opening."""
        opened = len(self.conns) + len(self.openings)
        return bool(self.limit) and opened >= self.limit

    def expected_room(self) -> int:
        """Streams the connection being opened will likely take: what the last one's
        server allowed (its SETTINGS), or RFC 9113's advised minimum."""
        return self.conns[-1].max_streams if self.conns else 100

    def streams(self) -> int:
        return sum(len(conn.streams) for conn in self.conns)

    def open(self, connecting: Coroutine[Any, Any, _H2Connection | None]
             ) -> asyncio.Task[_H2Connection | None]:
        task = self.opening = self.loop.create_task(connecting)
        self.openings.add(task)
        self.claims = 0  # the requests that wait for this one
        task.add_done_callback(self._opened)
        return task

    def settle(self) -> None:
        """Take in the connection just opened, if its task is done: its done callback
        runs a loop turn later, and until then the pool would not see it (a request
        looking meanwhile would await the done task again and again, never yielding)."""
        for task in [task for task in self.openings if task.done()]:
            self._opened(task)

    def _opened(self, task: asyncio.Task[_H2Connection | None]) -> None:
        if task not in self.openings:
            return  # taken in already (`settle`)
        self.openings.discard(task)
        if self.opening is task:
            self.opening = None
        if task.cancelled() or task.exception() is not None:
            return  # the claimants see the failure (`exception()`: it is not logged)
        conn = task.result()
        if conn is not None:
            if conn.closed:
                return
            conn.on_change = self._changed
            self.conns.append(conn)
            self._wake()

    def _changed(self, conn: _H2Connection) -> None:
        if conn.closed:
            with contextlib.suppress(ValueError):
                self.conns.remove(conn)
        if self.waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until a stream ends or a connection closes (room, perhaps); `TimeoutError`."""
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    def sweep(self, oldest: float) -> None:
        """Close the connections without a stream since before `oldest`."""
        for conn in self.conns:
            if not conn.streams and conn.idle_since < oldest:
                conn.close()
        self.conns = [conn for conn in self.conns if not conn.closed]

    def retire(self, error: Exception) -> None:
        for task in self.openings:
            task.cancel()
        for conn in self.conns:
            conn.close()
        self.conns = []
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self.waiters = []
