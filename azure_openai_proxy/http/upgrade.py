"""After a head that asks to switch protocols (`Connection: Upgrade`): llhttp stops
there, and we go on.

We do not switch to h2c (what `curl --http2` sends) or anything else but a WebSocket the
application takes (`websocket.py`): the request is plain HTTP/1.1. llhttp has ended that
message at its head and left the body to "the new protocol", so a new parser reads the
body behind a stand-in head that frames it the same way (llhttp keeps judging the
framing: chunked stays chunked), then whatever follows. A WebSocket the application
may take waits for its decision with what followed the head held (`_HeldUpgrade`:
reading goes on, up to `_HELD_BYTES`, so that a client that leaves meanwhile is seen
at once and the decision, which may be opening a connection upstream, is cancelled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from azure_openai_proxy.http.closing import StandIn
from azure_openai_proxy.http.deadlines import BODY
from azure_openai_proxy.http.request import FastRequest

if TYPE_CHECKING:
    from azure_openai_proxy.http.connection import _HttpConnection

__all__ = ["upgrade_decided", "upgrade_refused", "websocket_declined"]

_HELD_BYTES = 64 * 1024  # of what a client sends while its upgrade is decided


def upgrade_refused(conn: _HttpConnection, rest: bytes, offer: bool = True) -> None:
    """Go on parsing after each head that asked to switch protocols."""
    while (more := _after_upgrade(conn, rest, offer)) is not None:
        offer = True
        try:
            conn.parser.feed_data(more)
            return
        except httptools.HttpParserUpgrade as exc:
            rest = more[int(exc.args[0]):]
        except httptools.HttpParserError as exc:
            conn.parse_failed(exc)
            return


def _after_upgrade(conn: _HttpConnection, rest: bytes, offer: bool) -> bytes | None:
    """llhttp stopped after a head that asks to switch protocols (`Upgrade: h2c`, what
    `curl --http2` sends), leaving its body unread. A WebSocket the application may
    take waits for its decision (`rest` held, reading paused: `websocket_declined`).
    Else we do not switch: the request is plain HTTP/1.1, so a new parser goes on,
    reading the body behind a stand-in head that frames it the same way (llhttp
    keeps judging the framing), then whatever follows. The bytes to feed it, or None."""
    # The request of that head is the last one made: waiting, or being served.
    request = conn.pending[-1] if conn.pending else conn.current
    if not isinstance(request, FastRequest) or conn.closed:
        return None
    if request.body is not None and not request.body.received:
        # llhttp ended the message at its head (it left the body to the new
        # protocol): the body is still to come.
        request.body.done = False
        conn.parsing = request
        conn.waiting_for = BODY
    # (An HTTP/1.0 request's `Upgrade` is ignored, RFC 9110 7.8: a WebSocket's
    # handshake is HTTP/1.1, RFC 6455 4.1.)
    if (offer and conn.server.websocket_hook is not None and request.http11
            and request.method == "GET" and request.body is None
            and request.headers.get("upgrade", "").lower() == "websocket"):
        request.upgrade_rest = rest
        if len(rest) >= _HELD_BYTES:
            conn.pause_body()
        if conn.transport is not None:
            conn.transport.set_protocol(_HeldUpgrade(conn, request))
        return None
    conn.parser = httptools.HttpRequestParser(conn)
    if request.body is None:
        return rest or None
    conn.resuming = request
    conn.resume_deadline = conn.deadline
    framing = (b"Transfer-Encoding: chunked" if request.content_length is None
               else b"Content-Length: %d" % request.content_length)
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n" + rest


def websocket_declined(conn: _HttpConnection, request: FastRequest) -> None:
    """The application serves `request` as plain HTTP: parsing goes on after it."""
    rest, request.upgrade_rest = bytes(request.upgrade_rest or b""), None
    conn.resume_reading()
    upgrade_refused(conn, rest, offer=False)


def upgrade_decided(conn: _HttpConnection) -> None:
    """The application has decided (or failed to) on a WebSocket: the connection reads
    the transport again (until the WebSocket, if any, takes it)."""
    transport = conn.transport
    if transport is not None and not conn.closed and transport.get_protocol() is not conn:
        transport.set_protocol(conn)


class _HeldUpgrade(StandIn):
    """The transport's protocol while the application decides on a WebSocket: what the
    client sends is kept for after it (reading pauses past `_HELD_BYTES`), and a client
    that leaves or half-closes is the connection's end at once, as on HTTP."""

    def __init__(self, conn: _HttpConnection, request: FastRequest) -> None:
        super().__init__(conn)
        self._request = request

    def data_received(self, data: bytes) -> None:
        # One growing buffer, not a new `bytes` per read: a client dribbling a byte per
        # segment would otherwise cost a copy of everything held on every read.
        held = self._request.upgrade_rest
        if not isinstance(held, bytearray):
            held = self._request.upgrade_rest = bytearray(held or b"")
        held += data
        if len(held) >= _HELD_BYTES:
            self._conn.pause_body()
