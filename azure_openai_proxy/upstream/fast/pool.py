"""The keep-alive connections to one (scheme, host, port), bounded, most recently used
first."""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections import deque

from azure_openai_proxy.upstream.fast.connection import _Connection

__all__ = ["_CHECK_IDLE_AFTER", "_HostPool"]

# A connection idle this long may have been closed by the server's idle timer without the
# loop having seen it yet; its socket is looked at before reuse (a POST is not retried).
_CHECK_IDLE_AFTER = 1.0


class _HostPool:
    """The connections to one (scheme, host, port). Idle ones wait on a stack (the most
    recently used goes out first: its TCP window is open, the others may expire);
    `size` counts every open or opening one against `limit` (0: none)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, limit: int) -> None:
        self.loop = loop
        self.host = host
        self.limit = limit
        self.size = 0
        self.idle: list[_Connection] = []
        self.every: set[_Connection] = set()
        # Futures of callers over the limit: given a connection, or None for a free slot.
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.retired = False

    def take_idle(self, now: float, keepalive: float) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            age = now - conn.idle_since
            if age <= keepalive and not conn.closed and (age < _CHECK_IDLE_AFTER or _quiet(conn)):
                return conn
            self.discard(conn)
        return None

    def reserve(self) -> bool:
        if self.limit and self.size >= self.limit:
            return False
        self.size += 1
        return True

    async def wait(self, timeout: float) -> _Connection | None:
        """A connection handed over by a finished request, or None for a free slot (the
        caller connects in it); `TimeoutError` after `timeout` seconds."""
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException:  # timed out or cancelled
            self._forsake(waiter)
            raise

    def _forsake(self, waiter: asyncio.Future[_Connection | None]) -> None:
        """A waiter gives up: what it was handed just before goes on to the next one,
        and it leaves the queue (a slot is never lost to, nor taken by, a dead waiter)."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            conn = waiter.result()
            if conn is None:
                self.free_slot()
            else:
                self.put(conn)
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)

    def put(self, conn: _Connection) -> None:
        conn.busy = False
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                conn.busy = True
                waiter.set_result(conn)
                return
        if self.retired:
            self.discard(conn)
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        if conn in self.every:
            self.every.discard(conn)
            self.free_slot()

    def free_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to this waiter
                return
        self.size -= 1

    def lost(self, conn: _Connection) -> None:
        """The server closed a connection while it sat idle."""
        if conn in self.idle:
            self.idle.remove(conn)
        self.discard(conn)

    def sweep(self, oldest: float) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            if conn.idle_since >= oldest and not conn.closed:
                self.idle.append(conn)
            else:
                self.discard(conn)

    def retire(self) -> None:
        self.retired = True
        for conn in list(self.every):
            conn.close()
        self.idle.clear()


def _quiet(conn: _Connection) -> bool:
    """Whether an idle connection's socket has nothing to read. Something to read is the
    server's FIN (or TLS close_notify), which the loop may not have seen yet: a request
    written now would meet a closed connection."""
    transport = conn.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return True
    try:
        return not _readable(sock.fileno())
    except (OSError, ValueError):
        return False


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])
