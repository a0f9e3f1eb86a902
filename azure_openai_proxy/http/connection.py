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


class _Rejected(Exception):
    """The request cannot be parsed or is over a limit: answered, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
        self.closed = False
        # The connection's serving task, made for its first request and kept while the
        # connection lives: between requests it waits on `idle_waiter`. (A task per
        # request cost more than the rest of the connection's own work for it.)
        self.task: asyncio.Task[None] | None = None
        self.idle_waiter: asyncio.Future[FastRequest | bytes] | None = None
        self.serving = False  # a request is being answered
        self.pending: deque[FastRequest | bytes] = deque()
        self.parsing: FastRequest | None = None  # its head or body is still arriving
        self.discarding: RequestBody | None = None  # an unread body being dropped
        self.discard_until = 0  # bytes of it to drop before giving up and closing
        self.started = False  # a request's first byte arrived and its head did not end
        self.ticks = 0  # sweeps since the last byte arrived
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
        self.ticks = 0
        if self.started:
            # httptools gathers a header in memory until its line ends: bound that too.
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD + _MAX_TARGET:
                self._reject(self.server.refusal(431, "The request headers are too large."))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # served as plain HTTP; nothing after it is parsed
            self._pause_reading()
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; ours says which answer to give.
            cause = exc.__context__
            if isinstance(cause, _Rejected):
                self._reject(self.server.refusal(cause.status, cause.message))
            else:
                self._reject(self.server.refusal(400, "The request is not valid HTTP/1.1.", "bad_request"))

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

    def on_url(self, url: bytes) -> None:
        self._target.append(url)
        self._head_size += len(url)
        if self._head_size > _MAX_TARGET:
            raise _Rejected(414, "The request URL is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name.decode("latin-1"), value.decode("latin-1")))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > _MAX_HEAD or len(self._raw) > _MAX_HEADERS:
            raise _Rejected(431, "The request headers are too large.")

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = CIMultiDictProxy(CIMultiDict(self._raw))
        length_header = headers.get("content-length")
        length = int(length_header) if length_header is not None else None
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        body = RequestBody(self) if chunked or length else None
        if body is not None and headers.get("expect", "").lower() == "100-continue":
            body.expect_continue = True
        request = FastRequest(
            self, parser.get_method().decode("ascii"), b"".join(self._target).decode("latin-1"),
            headers, parser.get_http_version() == "1.1", parser.should_keep_alive(), length,
            body,
        )
        self.started = False
        self.parsing = request if body is not None else None
        if not self.serving and not self.pending:
            self._start(request)
        else:
            self.pending.append(request)
            if len(self.pending) >= _PIPELINE_DEPTH:
                self._pause_reading()

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
        if self.discarding is not None:
            self.discarding = None
        elif self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.finish()
        self.parsing = None

    # -- the request body's channel ----------------------------------------------------

    def date(self) -> str:
        return self.server.date()

    def pause_body(self) -> None:
        self._pause_reading()

    def resume_body(self) -> None:
        if self.reading_paused and len(self.pending) < _PIPELINE_DEPTH and not self.closing:
            body = self.parsing.body if self.parsing is not None else None
            if body is None or body.buffered <= BODY_HIGH_WATER:
                self.reading_paused = False
                if self.transport is not None and not self.closed:
                    self.transport.resume_reading()

    def send_continue(self) -> None:
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
            self.transport.pause_reading()

    def _reject(self, reply: bytes) -> None:
        """Answer an unparsable request once the ones before it are answered; then close."""
        self._pause_reading()
        self.closing = True
        if self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.fail(ClientDisconnected("The request became unparsable"))
        self.parsing = None
        if not self.serving:
            self._write_and_close(reply)
        else:
            self.pending.append(reply)

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
                self.ticks = 0  # idle from now: a long request must not count as idle time
                if self.pending:
                    item = self.pending.popleft()
                    self.resume_body()
                    continue
                self.serving = False
                item = b""  # the answered request is not kept while the connection idles
                self.idle_waiter = self.loop.create_future()
                item = await self.idle_waiter
        finally:
            self.serving = False
            self.idle_waiter = None
            self.task = None

    async def _answer(self, request: FastRequest) -> bool:
        """Run the handler and write its answer; whether the connection stays open."""
        server = self.server
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

    def sweep(self, keepalive_ticks: int, request_ticks: int) -> None:
        """Called once a second: close idle connections, answer stalled requests with 408."""
        self.ticks += 1
        if self.closed:
            return
        if self.write_paused:
            # A client that stops reading would hold its handler and an upstream
            # connection forever: past the request timeout it is disconnected.
            self.stalled_ticks += 1
            if self.stalled_ticks > request_ticks and self.transport is not None:
                # abort, not close: close() would wait for a buffer that never drains.
                self.closed = True
                self.transport.abort()
                return
        else:
            self.stalled_ticks = 0
        busy = self.serving
        if not busy and self.parsing is None and not self.started:
            if self.ticks > keepalive_ticks:
                self.close()
        elif self.ticks > request_ticks and not self.reading_paused:
            body = self.parsing.body if self.parsing is not None else None
            if busy and body is not None and body.waiting:
                body.fail(BodyTimedOut())
            elif not busy and self.discarding is None:
                self._reject(self.server.refusal(408, "The request was not received in time.", "timeout"))
