"""One client connection of `FastServer`: an asyncio Protocol that llhttp (httptools)
parses requests from, serving them one at a time (pipelined ones wait in order) and
writing each answer (see `server.py` for the behaviour as a whole)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.http.head import HeadRejected, check_version, request_framing
from azure_openai_proxy.http.interface import (
    Answer,
    BodyTimedOut,
    BodyTooLarge,
    ClientDisconnected,
)
from azure_openai_proxy.http.request import BODY_HIGH_WATER, FastRequest, RequestBody
from azure_openai_proxy.http.wire import BODYLESS_STATUS, UnsafeHeader, answer_head

if TYPE_CHECKING:
    from azure_openai_proxy.http.server import FastServer

__all__ = ["_HttpConnection"]

log = logging.getLogger("azure_openai_proxy")

_MAX_TARGET = 16 * 1024  # request line's target, bytes
_MAX_HEAD = 64 * 1024  # all header lines together, bytes
_MAX_HEADERS = 128
_PIPELINE_DEPTH = 16  # requests waiting behind the one being served
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_BYTES = 16 * 1024 * 1024  # at least this much of an unread body is dropped, not reset

# What the connection waits for from the client, each with its own deadline (in sweeps
# of the server, `FastServer.tick`): nothing (a request is being served), the next
# request after an answer (keep-alive), the rest of a head, the rest of a body.
_NOTHING, _IDLE, _HEAD, _BODY = 0, 1, 2, 3


class _HttpConnection(asyncio.Protocol):
    """One client connection: llhttp's callbacks (`on_*`) build requests; `_serve` runs
    them one at a time in a task that a disconnect cancels."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False  # close once the request being served is answered
        self.rejected = False  # a refusal is answered in its turn; nothing more is read
        self.closed = False
        # The connection's serving task, made for its first request and kept while the
        # connection lives: between requests it waits on `idle_waiter`. (A task per
        # request cost more than the rest of the connection's own work for it.)
        self.task: asyncio.Task[None] | None = None
        self.idle_waiter: asyncio.Future[FastRequest | bytes] | None = None
        self.serving = False  # a request is being answered
        self.current: FastRequest | None = None  # being served, its answer not begun
        self.pending: deque[FastRequest | bytes] = deque()
        self.parsing: FastRequest | None = None  # its head or body is still arriving
        self.discarding: RequestBody | None = None  # an unread body being dropped
        self.discard_until = 0  # bytes of it to drop before giving up and closing
        self.started = False  # a request's first byte arrived and its head did not end
        # A new connection's first head is due `head_timeout` after the accept.
        self.waiting_for = _HEAD
        self.deadline = server.tick + server.head_ticks  # 0: none
        self.paused_at = 0  # the tick at which reading paused (the deadline waits too)
        self.upgrading: FastRequest | None = None  # llhttp stops after its head (Upgrade)
        self.resuming: FastRequest | None = None  # its body is parsed behind a stand-in head
        self.resume_deadline = 0
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self._target: list[bytes] = []
        self._raw: list[tuple[str, str]] = []
        self._head_size = 0
        self._head_bytes = 0
        self.stalled_ticks = 0  # sweeps during which the client has not read our writes

    # -- asyncio's callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        if self.server.closing:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.started:
            # httptools gathers a header in memory until its line ends: bound that too.
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD + _MAX_TARGET:
                self._reject(431, "The request headers are too large.")
                return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                more = self._after_upgrade(data[int(exc.args[0]):])
                if more is None:
                    return
                data = more
            except httptools.HttpParserError as exc:
                # httptools wraps what a callback raised; ours says which answer to give.
                cause = exc.__context__
                if isinstance(cause, HeadRejected):
                    self._reject(cause.status, cause.message, cause.code)
                elif "HTTP version" in str(exc) or "PRI" in str(exc):
                    self._reject(505, "Only HTTP/1.1 and HTTP/1.0 are served here.",
                                 "http_version_not_supported")
                else:
                    self._reject(400, "The request is not valid HTTP/1.1.")
                return

    def _after_upgrade(self, rest: bytes) -> bytes | None:
        """llhttp stopped after a head that asks to switch protocols (`Upgrade: h2c`, what
        `curl --http2` sends), leaving its body unread. We do not switch: the request is
        plain HTTP/1.1, so a new parser goes on, reading the body behind a stand-in head
        that frames it the same way (llhttp keeps judging the framing), then whatever
        follows. The bytes to feed it, or None."""
        request, self.upgrading = self.upgrading, None
        self.parser = httptools.HttpRequestParser(self)
        if request is None or request.body is None or self.closed:
            return rest or None
        self.resuming = request
        self.resume_deadline = self.deadline
        framing = (b"Transfer-Encoding: chunked" if request.content_length is None
                   else b"Content-Length: %d" % request.content_length)
        return b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n" + rest

    def eof_received(self) -> bool | None:
        # A client that half-closes has left; the transport closes and
        # connection_lost cancels the handler.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            # The client left: the handler stops (and the upstream closes), or the idle
            # task ends.
            self.task.cancel()
        if self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.fail(ClientDisconnected("The client closed the connection"))
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientDisconnected("The client closed the connection"))
        self.pending.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- llhttp's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.started = True
        self._target = []
        self._raw = []
        self._head_size = self._head_bytes = 0
        if self.waiting_for != _HEAD:  # else a new connection's: due since the accept
            self.waiting_for = _HEAD
            self.deadline = self.server.tick + self.server.head_ticks

    def on_url(self, url: bytes) -> None:
        self._target.append(url)
        self._head_size += len(url)
        if self._head_size > _MAX_TARGET:
            raise HeadRejected(414, "The request URL is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name.decode("latin-1"), value.decode("latin-1")))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > _MAX_HEAD or len(self._raw) > _MAX_HEADERS:
            if self.started:
                raise HeadRejected(431, "The request headers are too large.")
            # After the head: the trailer of a chunked body.
            raise HeadRejected(400, "The request body's chunked trailer is too large.")

    def on_headers_complete(self) -> None:
        if self.resuming is not None:
            self._resume_body()
            return
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1":
            check_version(version)
        method = parser.get_method().decode("ascii")
        target = b"".join(self._target).decode("latin-1")
        headers = CIMultiDictProxy(CIMultiDict(self._raw))
        length, chunked = request_framing(method, target, version == "1.1", headers)
        body = RequestBody(self) if chunked or length else None
        request = FastRequest(self, method, target, headers, version == "1.1",
                              parser.should_keep_alive(), length, body)
        self.started = False
        if body is not None:
            self.parsing = request
            self.waiting_for = _BODY
            if headers.get("expect", "").lower() == "100-continue":
                body.expect_continue = True
                self.deadline = 0  # the body is due once "100 Continue" has gone out
            else:
                self.deadline = self.server.tick + self.server.body_ticks
        else:
            self.parsing = None
            self.waiting_for = _NOTHING
        if parser.should_upgrade():
            self.upgrading = request  # llhttp stops after this head: see _after_upgrade
        if not self.serving and not self.pending:
            self._start(request)
        else:
            self.pending.append(request)
            if len(self.pending) >= _PIPELINE_DEPTH:
                self._pause_reading()

    def _resume_body(self) -> None:
        """The stand-in head of `_after_upgrade` ended: the body that follows is the
        upgrade request's."""
        self.parsing, self.resuming = self.resuming, None
        self.started = False
        self.waiting_for = _BODY
        self.deadline = self.resume_deadline

    def on_body(self, data: bytes) -> None:
        discarding = self.discarding
        if discarding is not None:
            discarding.received += len(data)
            if discarding.received > self.discard_until:
                self.discarding = None
                self.closing = True
                self.close()
            return
        if self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.feed(data)

    def on_message_complete(self) -> None:
        if self.upgrading is not None:
            return  # llhttp left the body unread: see _after_upgrade
        if self.discarding is not None:
            self.discarding = None
        elif self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.finish()
        self.parsing = None
        if self.serving or self.pending:
            self.waiting_for = _NOTHING
        else:
            self._wait_idle()  # an answered request's unread body ended

    # -- the request body's channel ----------------------------------------------------

    def date(self) -> str:
        return self.server.date()

    def pause_body(self) -> None:
        self._pause_reading()

    def resume_body(self) -> None:
        if (self.reading_paused and len(self.pending) < _PIPELINE_DEPTH and not self.closing
                and not self.rejected):
            body = self.parsing.body if self.parsing is not None else None
            if body is None or body.buffered <= BODY_HIGH_WATER:
                self.reading_paused = False
                if self.deadline:  # the time spent paused was ours, not the client's
                    self.deadline += self.server.tick - self.paused_at
                if self.transport is not None and not self.closed:
                    self.transport.resume_reading()

    def send_continue(self) -> None:
        if self.waiting_for == _BODY and not self.deadline:
            self.deadline = self.server.tick + self.server.body_ticks
        if self.transport is not None and not self.closed:
            self.transport.write(_CONTINUE)

    async def drain(self) -> None:
        if self.closed:
            raise ClientDisconnected("The client closed the connection")
        if self.write_paused:
            self.drain_waiter = self.loop.create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None

    # -- serving ---------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.paused_at = self.server.tick
            self.transport.pause_reading()

    def _wait_idle(self) -> None:
        """Nothing is being received or served: the next request is due within the
        keep-alive timeout."""
        self.waiting_for = _IDLE
        self.deadline = self.server.tick + self.server.keepalive_ticks

    def _reject(self, status: int, message: str, code: str = "bad_request") -> None:
        """Refuse what the client is sending now: the refusal is answered in its turn
        (after the answers to the requests before it), then the connection closes.
        Nothing after it is read."""
        self._pause_reading()
        self.rejected = True
        self.deadline = 0
        reply = self.server.refusal(status, message, code)
        parsing, self.parsing = self.parsing, None
        if parsing is not None:
            if parsing is self.current:
                # The request being served cannot be read to its end: the refusal is its
                # answer (unless part of another one already left), and its handler
                # stops as if the client had left.
                stream = parsing.started_stream
                if stream is None or stream.drop_pending_head():
                    self._write_and_close(reply)
                else:
                    self.close()
                if self.task is not None:
                    self.task.cancel()
                return
            if self.pending and self.pending[-1] is parsing:
                self.pending.pop()  # never served: the refusal is its answer
            else:
                # It is answered already (its unread body was being dropped): a second
                # answer would be one too many. The connection closes after that answer.
                self.closing = True
                if not self.serving:
                    self.close()
                return
        if self.serving:
            self.pending.append(reply)
        else:
            self._write_and_close(reply)

    def _write_and_close(self, reply: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(reply)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _start(self, request: FastRequest) -> None:
        """Serve `request` now: hand it to the idle serving task, or make that task."""
        self.serving = True
        self.current = request
        waiter = self.idle_waiter
        if waiter is not None and not waiter.done():
            self.idle_waiter = None
            waiter.set_result(request)
        else:
            self.task = self.loop.create_task(self._serve(request))

    async def _serve(self, first: FastRequest) -> None:
        item: FastRequest | bytes = first
        del first  # not kept for the connection's life
        try:
            while True:
                if isinstance(item, bytes):
                    self._write_and_close(item)
                    return
                if not await self._answer(item) or self.closing or self.closed:
                    if self.pending and isinstance(self.pending[0], bytes):
                        # The next request could not be parsed: its error, then close.
                        self._write_and_close(self.pending[0])
                    self.close()
                    return
                if self.pending:
                    item = self.pending.popleft()
                    self.resume_body()
                    continue
                self.serving = False
                if self.waiting_for == _NOTHING:
                    self._wait_idle()
                item = b""  # the answered request is not kept while the connection idles
                self.idle_waiter = self.loop.create_future()
                item = await self.idle_waiter
        finally:
            self.serving = False
            self.current = None
            self.idle_waiter = None
            self.task = None

    async def _answer(self, request: FastRequest) -> bool:
        """Run the handler and write its answer; whether the connection stays open."""
        server = self.server
        self.current = request
        try:
            reply = await server.app(request)
        except (ClientDisconnected, ConnectionError):
            self.close()
            return False
        except BodyTooLarge as exc:
            reply = server.app.refusal(413, str(exc))
        except BodyTimedOut:
            reply = server.app.refusal(408, "The request body was not received in time.", "timeout")
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            reply = server.app.refusal(500, "The gateway hit an unexpected error.", "internal_error")
        finally:
            self.current = None  # from here on, its answer is being written
        stream = request.started_stream
        body = request.body
        # A client still waiting for "100 Continue" never sends that body: close instead.
        keep_alive = request.keep_alive and (body is None or body.done or not body.expect_continue)
        if stream is not None:
            if reply is not stream and not stream.drop_pending_head():
                # An answer had started on the wire when the handler answered anew (an
                # error after stream()): a second answer would corrupt the connection.
                self.close()
                return False
            if reply is stream:
                await stream.end()  # a handler that returned without ending it
                keep_alive = keep_alive and (stream.chunked or stream.bodyless)
        if isinstance(reply, Answer):
            await self._write_whole(reply, request, keep_alive)
        elif reply is not stream:
            log.error("the handler for %s %s returned %r, not an answer", request.method,
                      request.path, type(reply).__name__)
            await self._write_whole(server.app.refusal(
                500, "The gateway hit an unexpected error.", "internal_error"), request, False)
            keep_alive = False
        if keep_alive and body is not None and not body.done:
            # Read and drop the rest of the body (even past the size limit, for a while:
            # a client still uploading when its 413 is sent must be able to read it, not
            # get a reset), so the connection can serve its next request.
            body.discard()
            self.discarding = body
            self.discard_until = body.received + max(server.max_body_bytes, _LINGER_BYTES)
            self.resume_body()
        return keep_alive

    async def _write_whole(self, answer: Answer, request: FastRequest, keep_alive: bool) -> None:
        """A complete answer: head and body in one write."""
        date = self.server.date()
        status = answer.status
        data = answer.body
        try:
            head = answer_head(answer, request.method, keep_alive, date, request.extra_headers)
        except UnsafeHeader as exc:
            log.error("unsafe response header on %s %s: %s", request.method, request.path, exc)
            fallback = self.server.app.refusal(500, "The gateway hit an unexpected error.",
                                               "internal_error")
            head = answer_head(fallback, request.method, keep_alive, date)
            status, data = fallback.status, fallback.body
        transport = self.transport
        if transport is None or self.closed:
            return
        if request.method == "HEAD" or status < 200 or status in BODYLESS_STATUS:
            transport.write(head)
        elif len(data) < 65536:
            transport.write(head + data)
        else:
            transport.write(head)
            transport.write(data)
        if self.write_paused:
            with contextlib.suppress(ClientDisconnected):
                await self.drain()

    def sweep(self, tick: int) -> None:
        """Called by the server's sweep: a client that reads nothing of an answer for
        `send_timeout` is cut off; a deadline passed answers 408 or closes."""
        if self.closed:
            return
        if self.write_paused:
            # A client that stops reading would hold its handler and an upstream
            # connection forever.
            self.stalled_ticks += 1
            if self.stalled_ticks > self.server.send_ticks and self.transport is not None:
                # abort, not close: close() would wait for a buffer that never drains.
                self.closed = True
                self.transport.abort()
                return
        else:
            self.stalled_ticks = 0
        deadline = self.deadline
        if not deadline or tick < deadline or self.reading_paused:
            return
        self.deadline = 0
        waiting = self.waiting_for
        if waiting == _IDLE:
            self.close()
        elif waiting == _HEAD:
            self._reject(408, "The request head was not received in time.", "timeout")
        elif waiting == _BODY:
            self._body_late()

    def _body_late(self) -> None:
        parsing = self.parsing
        body = parsing.body if parsing is not None else None
        if body is None or self.discarding is not None:
            self.close()  # an answered request's unread body: there is nothing to say
        elif parsing is self.current and body.waiting:
            # Its handler is reading it: it answers the 408; then the connection closes.
            self._pause_reading()
            self.closing = True
            body.fail(BodyTimedOut())
        else:
            self._reject(408, "The request body was not received in time.", "timeout")
