"""Serving one request on a connection: run the application's handler, write its answer
(a whole `Answer` in one write, or the end of a stream it began), and decide whether the
connection stays open for the next request."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from azure_openai_proxy.http.deadlines import NOTHING
from azure_openai_proxy.http.interface import (
    Answer,
    BodyTimedOut,
    BodyTooLarge,
    ClientDisconnected,
    WebSocketClosed,
    WebSocketHandler,
)
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.http.upgrade import upgrade_decided, websocket_declined
from azure_openai_proxy.http.websocket import run_websocket
from azure_openai_proxy.http.wire import BODYLESS_STATUS, UnsafeHeader, answer_head

if TYPE_CHECKING:
    from azure_openai_proxy.http.connection import _HttpConnection

__all__ = ["serve_request"]

log = logging.getLogger("azure_openai_proxy")

_LINGER_BYTES = 16 * 1024 * 1024  # at least this much of an unread body is dropped, not reset
# For at most this long after the answer (nginx's `lingering_time`), or the body's own
# deadline if sooner: then the connection closes, the rest of the upload reset.
_LINGER_SECONDS = 30.0


async def serve_request(conn: _HttpConnection, request: FastRequest) -> bool:
    """Run the handler and write its answer; whether the connection stays open."""
    server = conn.server
    conn.current = request
    try:
        if request.upgrade_rest is not None:  # a WebSocket the application may take
            try:
                handler = await server.websocket_hook(request) if server.websocket_hook else None
            finally:
                upgrade_decided(conn)
            if handler is not None:
                conn.current = None
                await _run_websocket(conn, request, handler)
                return False
            websocket_declined(conn, request)
        reply = await server.app(request)
    except (ClientDisconnected, ConnectionError):
        conn.close()
        return False
    except BodyTooLarge as exc:
        reply = server.app.refusal(413, str(exc))
    except BodyTimedOut:
        reply = server.app.refusal(408, "The request body was not received in time.", "timeout")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        reply = server.app.refusal(500, "The gateway hit an unexpected error.", "internal_error")
    conn.current = None  # from here on, its answer is being written
    stream = request.started_stream
    body = request.body
    # A client still waiting for "100 Continue" never sends that body: close instead.
    # (One that has sent part of it does not wait: its wait for "100 Continue" is short.)
    keep_alive = request.keep_alive and (body is None or body.done or not body.expect_continue
                                         or body.received > 0)
    if stream is not None:
        if reply is not stream and not stream.drop_pending_head():
            # An answer had started on the wire when the handler answered anew (an
            # error after stream()): a second answer would corrupt the connection.
            conn.close()
            return False
        if reply is stream:
            if not stream.ended:
                try:
                    await stream.end()  # a handler that returned without ending it
                except (ClientDisconnected, ConnectionError):
                    conn.close()  # the client left: not an error of the serving task
                    return False
            keep_alive = keep_alive and (stream.chunked or stream.bodyless)
    if isinstance(reply, Answer):
        await _write_whole(conn, reply, request, keep_alive)
    elif reply is not stream:
        log.error("the handler for %s %s returned %r, not an answer", request.method,
                  request.path, type(reply).__name__)
        await _write_whole(conn, server.app.refusal(
            500, "The gateway hit an unexpected error.", "internal_error"), request, False)
        keep_alive = False
    if (body is not None and not body.done and not conn.rejected
            and not (body.expect_continue and not body.received)
            and not conn.closed and (keep_alive or isinstance(reply, Answer))):
        # Read and drop the rest of the body (even past the size limit, for a while:
        # a client still uploading when its 413 is sent must be able to read it, not
        # get a reset), so the connection can serve its next request. A connection
        # that closes after a whole answer (`Connection: close`, HTTP/1.0) closes once
        # the body has ended: closed with the upload unread, the kernel resets it and
        # the client's next send fails before it reads the answer.
        body.discard()
        conn.discarding = body
        conn.discard_until = body.received + max(server.max_body_bytes, _LINGER_BYTES)
        conn.resume_body()  # (which moves the deadline on by the time reading paused)
        # A body awaiting "100 Continue" has no deadline yet; a client trickling it would
        # hold the connection all of `body_timeout` (300 s), or forever.
        limits = server.limits
        due = server.tick + limits.ticks(min(_LINGER_SECONDS, limits.body_timeout))
        if not conn.deadline or conn.deadline > due:
            conn.deadline = due
    return keep_alive

async def _write_whole(conn: _HttpConnection, answer: Answer, request: FastRequest,
                   keep_alive: bool) -> None:
    """A complete answer: head and body in one write."""
    date = conn.server.date()
    status = answer.status
    data = answer.body
    try:
        head = answer_head(answer, request.method, keep_alive, date, request.extra_headers)
    except UnsafeHeader as exc:
        log.error("unsafe response header on %s %s: %s", request.method, request.path, exc)
        fallback = conn.server.app.refusal(500, "The gateway hit an unexpected error.",
                                           "internal_error")
        head = answer_head(fallback, request.method, keep_alive, date)
        status, data = fallback.status, fallback.body
    if keep_alive and not request.http11:
        # HTTP/1.0 closes unless the answer says otherwise (RFC 9112 9.3, appendix C.2.2).
        head = head[:-2] + b"Connection: keep-alive\r\n\r\n"
    transport = conn.transport
    if transport is None or conn.closed:
        return
    if request.method == "HEAD" or status < 200 or status in BODYLESS_STATUS:
        transport.write(head)
    elif len(data) < 65536:
        transport.write(head + data)
    else:
        transport.write(head)
        transport.write(data)
    if conn.write_paused:
        with contextlib.suppress(ClientDisconnected):
            await conn.drain()


async def _run_websocket(conn: _HttpConnection, request: FastRequest,
                         handler: WebSocketHandler) -> None:
    rest, request.upgrade_rest = bytes(request.upgrade_rest or b""), None
    conn.waiting_for, conn.deadline = NOTHING, 0  # no HTTP deadlines from here on
    try:
        await run_websocket(conn, request, handler, rest)
    except (ClientDisconnected, ConnectionError, WebSocketClosed):
        pass
    except Exception:
        log.exception("the WebSocket handler for %s failed", request.path)
