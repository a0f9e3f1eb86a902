"""The deadlines of a connection, checked by the server's sweep (no timer per request).

A connection waits for one thing at a time from its client, each with its own deadline
in sweeps (`FastServer.tick`): nothing (a request is being served: its answer's pace is
`send_timeout`'s, the longest the client may read none of what waits for it), the next
request after an answer (`keepalive_timeout`: then it just closes), the rest of a head
(`head_timeout`: 408), the rest of a body (`body_timeout`: 408, from the handler if it
is reading the body, else from the engine). The connection sets `waiting_for` and
`deadline` as requests go; a deadline of 0 is none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure_openai_proxy.http.interface import BodyTimedOut

if TYPE_CHECKING:
    from azure_openai_proxy.http.connection import _HttpConnection

__all__ = ["BODY", "HEAD", "IDLE", "NOTHING", "sweep"]

NOTHING, IDLE, HEAD, BODY = 0, 1, 2, 3


def sweep(conn: _HttpConnection, tick: int) -> None:
    """Called by the server's sweep: a client that reads nothing of an answer for
    `send_timeout` is cut off; a deadline passed answers 408 or closes."""
    if conn.closed:
        # Closed, yet not lost: the transport waits to flush what is still buffered,
        # below the high-water mark (so writing never paused), to a client that reads
        # nothing. Its fd and its place under `max_connections` last until it is cut.
        if _read_some(conn):
            conn.closed_at = tick
        if tick - conn.closed_at > conn.server.send_ticks and conn.transport is not None:
            conn.transport.abort()
        return
    if conn.write_paused:
        # A client that stops reading would hold its handler and an upstream
        # connection forever. One that reads, however slowly, is not cut (nginx's
        # send_timeout: between two writes that make progress): a large answer to a
        # slow link stays past the high-water mark until nearly all of it is read.
        if _read_some(conn):
            conn.stalled_ticks = 0
        conn.stalled_ticks += 1
        if conn.stalled_ticks > conn.server.send_ticks and conn.transport is not None:
            # abort, not close: close() would wait for a buffer that never drains.
            conn.closed = conn.gone = True
            conn.transport.abort()
            return
    else:
        conn.stalled_ticks = 0
    deadline = conn.deadline
    if not deadline or tick < deadline or conn.reading_paused:
        return
    conn.deadline = 0
    waiting = conn.waiting_for
    if waiting == IDLE:
        conn.close()
    elif waiting == HEAD:
        conn.reject(408, "The request head was not received in time.", "timeout")
    elif waiting == BODY:
        _body_late(conn)


def _read_some(conn: _HttpConnection) -> bool:
    """The client has read some of what waits in the transport's buffer since the last
    sweep that asked (a sweep's call per connection behind, never per write)."""
    transport = conn.transport
    if transport is None:
        return False
    left = transport.get_write_buffer_size()
    unsent, conn.unsent = conn.unsent, left
    return left < unsent


def _body_late(conn: _HttpConnection) -> None:
    parsing = conn.parsing
    body = parsing.body if parsing is not None else None
    if body is None or conn.discarding is not None:
        conn.close()  # an answered request's unread body: there is nothing to say
    elif parsing is conn.current and body.waiting:
        # Its handler is reading it: it answers the 408; then the connection closes.
        conn.pause_body()
        conn.closing = conn.rejected = True  # nothing more is read
        body.fail(BodyTimedOut())
    else:
        conn.reject(408, "The request body was not received in time.", "timeout")
