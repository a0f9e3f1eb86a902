"""A connection's one timer, every eighth of the read timeout: its streams' read timeout
(`stream.quiet_streams`) and whether the connection itself is still alive.

A stream timing out says nothing of its connection, which serves every other request to
the origin: a connection the network dropped without a word (a NAT or load balancer that
forgot the flow, a server host gone) would take each new request and time each out after
read_timeout (600 s by default), for ever. So a connection none of whose streams heard a
frame for a whole check is sent a PING; a server answers that from its HTTP/2 layer,
however slow its answers are (a model still thinking). Neither its ACK nor a stream's
frame by the next check: the connection is dead; its streams fail as timed out and it is
dropped, so the next request opens another (Go's http2 Transport has the same check:
ReadIdleTimeout and PingTimeout)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.stream import quiet_streams

if TYPE_CHECKING:
    from azure_openai_proxy.upstream.h2.connection import _H2Connection

__all__ = ["arm"]

_QUIET_CHECKS = 8  # the read timeout is checked this many times per timeout (as fast/)
_STALLED = "Azure OpenAI stopped sending data (read timeout) in the middle of the response."
_PING = f.frame(f.PING, 0, 0, b"liveness")


def arm(conn: _H2Connection) -> None:
    conn.timer = conn.loop.call_later(conn.read_timeout / _QUIET_CHECKS, _check, conn)


def _check(conn: _H2Connection) -> None:
    """Fail the streams whose caller has waited `read_timeout` (up to an eighth more)
    without a frame, or whose sink has (pushed, not paused); a caller not waiting (its
    client is slow) is not timed. Streams left to drain are reset. Then the liveness
    probe (the module's docstring)."""
    conn.timer = None
    if conn.closed:
        return
    streams = conn.streams.values()
    heard = any(stream.heard for stream in streams)  # before `quiet_streams` clears them
    stalled, drained = quiet_streams(streams, conn.loop.time(), conn.read_timeout)
    for stream in stalled:
        conn._reset(stream, UpstreamTimeout(_STALLED if stream.started else (
            f"Azure OpenAI did not answer in time ({conn.host}).")))
    for stream in drained:
        conn.abandon(stream)
    if heard or not conn.streams:
        conn.pinged = False
    elif conn.pinged:  # asked at the last check: no answer, no frame since
        _dead(conn)
        return
    else:
        conn.pinged = True  # until its ACK (`_H2Connection._on_frame`)
        conn._write(_PING)
    arm(conn)


def _dead(conn: _H2Connection) -> None:
    """Not even a PING answered: every stream fails as timed out, the connection is
    aborted (closing would wait to flush to a peer that is gone)."""
    streams, conn.streams = conn.streams, {}
    conn.blocked.clear()
    conn.draining = conn.closed = True
    for stream in streams.values():
        with contextlib.suppress(Exception):  # a sink raising: the others fail all the same
            stream.fail(UpstreamTimeout(_STALLED if stream.started else (
                f"Azure OpenAI did not answer in time ({conn.host}): the HTTP/2 connection "
                "went silent, not even answering a PING.")))
    if conn.transport is not None:
        conn.transport.abort()
    conn._changed()  # the pool lets it go
