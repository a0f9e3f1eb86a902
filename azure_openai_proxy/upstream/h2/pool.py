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
        # Requests waiting for room at `limit` connections, in the order they came, and
        # those woken to a turn that have not taken it yet (newcomers go after both).
        self.waiters: list[asyncio.Future[None]] = []
        self.handed = 0
        self.http1 = False  # an https origin whose ALPN did not choose h2

    def room(self) -> _H2Connection | None:
        for conn in self.conns:  # `has_room`, inline: a call fewer a request
            if not conn.draining and not conn.closed and len(conn.streams) < conn.max_streams:
                return conn
        return None

    def full(self) -> bool:
        """No new connection allowed: `limit` open or opening. One draining (a GOAWAY:
        Azure's graceful restart) is not counted: it takes no stream and holds its last
        ones only until they end, a relayed stream maybe for minutes, and counted, it
        turned every request away meanwhile (pool_size 1: all of them)."""
        opened = len(self.openings) + sum(not conn.draining for conn in self.conns)
        return bool(self.limit) and opened >= self.limit

    def expected_room(self) -> int:
        """Streams the connection being opened will likely take: what the last one's
        server allowed (its SETTINGS), or RFC 9113's advised minimum."""
        return max(self.conns[-1].max_streams, 1) if self.conns else 100

    def drop_roomless(self) -> None:
        """Close the idle connections whose server allows no stream at all."""
        for conn in self.conns:
            if not conn.streams and conn.max_streams == 0:
                conn.close()
        self.conns = [conn for conn in self.conns if not conn.closed]

    def free(self) -> int:
        """Streams the open connections would take now."""
        return sum(max(conn.max_streams - len(conn.streams), 0) for conn in self.conns
                   if not conn.draining and not conn.closed)

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
            self.wake(conn.max_streams)

    def _changed(self, conn: _H2Connection) -> None:
        if conn.closed:
            with contextlib.suppress(ValueError):
                self.conns.remove(conn)
        if self.waiters:
            self.wake(1)  # a stream ended (room for one) or a connection closed

    def wake(self, count: int) -> None:
        """Give the next `count` waiters their turn, first come first served (waking
        them all had every loser wait again, and newcomers take the room first)."""
        while count > 0 and self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                self.handed += 1
                count -= 1

    async def wait(self, deadline: float) -> None:
        """Until this request's turn at room, in the order requests came; `TimeoutError`
        at `deadline` (the loop's clock: a request's wait is not restarted by turns
        that found no room)."""
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if _handed(waiter):
                self.wake(1)  # the turn given to us goes to the next in line
            raise
        finally:
            if _handed(waiter):
                self.handed -= 1
            else:
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


def _handed(waiter: asyncio.Future[None]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
