"""Closing a connection so that its last answer is read: the refusal of a request
(`_Lingering`) and of a connection over the cap (`OverCapacity`).

Closing a socket with unread bytes from the client makes the kernel send a reset, and a
reset can destroy an answer the client has not read yet: a 400 or a 408 sent to a
client still sending would often be lost. So the answer goes out, then our half of the
connection is shut (the client reads the answer, then the end), and what the client
still sends is read and dropped until it closes too or two sweeps have passed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from azure_openai_proxy.http.connection import _HttpConnection
    from azure_openai_proxy.http.server import FastServer

__all__ = ["OverCapacity", "StandIn", "linger"]

LINGER_TICKS = 2


def linger(conn: _HttpConnection, transport: asyncio.Transport) -> None:
    """`conn` has written its last answer: shut our side, drop what comes, then close
    (the connection's sweep closes it at its deadline, or the client's end does)."""
    if not transport.can_write_eof():
        conn.close()
        return
    transport.write_eof()
    transport.set_protocol(_Lingering(conn))
    conn.pending.clear()
    conn.linger_until(conn.server.tick + LINGER_TICKS)
    transport.resume_reading()


class StandIn(asyncio.Protocol):
    """A protocol standing in for a connection's own for a while (it reads what comes
    its own way): the client's end and the write flow still reach the connection."""

    def __init__(self, conn: _HttpConnection) -> None:
        self._conn = conn

    def eof_received(self) -> bool | None:
        return None  # the client is done: the transport closes (`connection_lost`)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


class _Lingering(StandIn):
    """The protocol of a connection after its last answer: reads and drops."""

    def data_received(self, data: bytes) -> None:
        return None


class OverCapacity(asyncio.Protocol):
    """A connection past `max_connections`: a 503 at once, then closed. What the client
    sends meanwhile is read and dropped, so that closing does not turn into a reset
    that could destroy the 503 before the client reads it; the next sweep but one
    closes it (or the client's own close does, sooner)."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.deadline = server.tick + 2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server.refusing) >= server.limits.max_connections:
            transport.abort()  # a flood: no fd is kept even for a refusal
            return
        server.refusing.add(self)
        transport.write(server.refusal(
            503, "The server has too many connections open; retry shortly.",
            "server_overloaded", {"retry-after": "1"}))
        if transport.can_write_eof():
            transport.write_eof()

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool | None:
        return None  # the client read its 503 and left: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.refusing.discard(self)

    def sweep(self, tick: int) -> None:
        if tick >= self.deadline:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
