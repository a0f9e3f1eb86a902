"""One client connection of `FastServer`: an asyncio Protocol that llhttp (httptools)
parses requests from, serving them one at a time (pipelined ones wait in order) and
writing each answer (see `server.py` for the behaviour as a whole)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.http.answer import serve_request
from azure_openai_proxy.http.closing import linger
from azure_openai_proxy.http.deadlines import BODY, HEAD, IDLE, NOTHING, sweep
from azure_openai_proxy.http.head import (
    KNOWN_HOSTS,
    HeadRejected,
    check_version,
    request_framing,
    valid_host,
)
from azure_openai_proxy.http.interface import AnsweredByEngine, ClientDisconnected
from azure_openai_proxy.http.request import BODY_HIGH_WATER, FastRequest, RequestBody
from azure_openai_proxy.http.upgrade import upgrade_refused

if TYPE_CHECKING:
    from azure_openai_proxy.http.server import FastServer

__all__ = ["_HttpConnection"]

log = logging.getLogger("azure_openai_proxy")

_MAX_TARGET = 16 * 1024  # request line's target, bytes
_MAX_HEAD = 64 * 1024  # all header lines together, bytes
_MAX_HEADERS = 128
_NOT_CHUNKED = -(1 << 62)
_PIPELINE_DEPTH = 16  # requests waiting behind the one being served
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_AFTER_CLOSE = "Data after `Connection: close`"  # llhttp's error for it



class _HttpConnection(asyncio.Protocol):
    """One client connection: llhttp's callbacks (`on_*`) build requests; `_serve` runs
    them one at a time in a task that a disconnect cancels."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        # The server's: asyncio.get_running_loop() costs a getpid() system call on
        # Python 3.11, once per connection.
        self.loop = server.loop
        # The Date value (`Channel.date`): the server's own, called without a method of
        # ours around it.
        self.date = server.date
        self.parser = httptools.HttpRequestParser(self)
        # Close once the request being served is answered (no keep-alive after it); its
        # body is still read to its end (a graceful shutdown sets it on uploads).
        self.closing = False
        self.rejected = False  # a refusal is answered in its turn; nothing more is read
        self.closed = False
        # Nothing more reaches the client: we closed, or its end came (the transport then
        # closes itself, and may report the loss only once its buffer is written), or
        # the connection was lost. A streamed answer reads it per chunk (a flag, not a
        # call to the transport's is_closing()). A transport that fails a read or a
        # write (a reset) closes itself and reports the loss on the next turn of the
        # loop: until then this is not set and writes vanish (`FastStream.end` asks).
        self.gone = False
        self.closed_at = 0  # the tick at which close() began (the sweep aborts it later)
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
        # A chunked body's bytes that are not its data since its last chunk: its trailer
        # (httptools holds a header line in memory until it ends), refused past 64 KB.
        # The read its head came in is not counted (at most 256 KB more), so it may run
        # below 0; `_NOT_CHUNKED` for other bodies.
        self.framing = _NOT_CHUNKED
        # A new connection's first head is due `head_timeout` after the accept.
        self.waiting_for = HEAD
        self.deadline = server.head_due  # 0: none
        self.paused_at = 0  # the tick at which reading paused (the deadline waits too)
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
        self.unsent = 0  # the transport's buffered bytes at the last sweep that looked

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
                self.reject(431, "The request headers are too large.")
                return
        elif self.framing != _NOT_CHUNKED:
            self.framing += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            upgrade_refused(self, data[int(exc.args[0]):])
        except httptools.HttpParserError as exc:
            self.parse_failed(exc)
        else:
            if self.framing > _MAX_HEAD:
                self.reject(400, "The request body's chunked trailer is too large.")

    def parse_failed(self, exc: httptools.HttpParserError) -> None:
        # httptools wraps what a callback raised; ours says which answer to give.
        cause = exc.__context__
        if str(exc) == _AFTER_CLOSE:
            # Bytes behind a request that closes the connection (`Connection: close`,
            # HTTP/1.0 without keep-alive): its answer is the last; they get none (RFC
            # 9112 9.6), and nothing more is read. (Not `closing`: requests pipelined
            # before it are still answered and kept alive up to it.)
            self.pause_body()
            self.rejected = True
            if not self.serving and not self.pending:
                self.close()
        elif isinstance(cause, HeadRejected):
            self.reject(cause.status, cause.message, cause.code)
        elif "HTTP version" in str(exc) or "PRI" in str(exc):
            self.reject(505, "Only HTTP/1.1 and HTTP/1.0 are served here.",
                        "http_version_not_supported")
        else:
            self.reject(400, "The request is not valid HTTP/1.1.")

    def resume_reading(self) -> None:
        if self.reading_paused and not self.rejected:
            self.reading_paused = False
            if self.deadline:  # the time spent paused was ours, not the client's
                self.deadline += self.server.tick - self.paused_at
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes has left; the transport closes and
        # connection_lost cancels the handler.
        self.gone = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.gone = True
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
        # The client read down to the low-water mark: a new wait begins (a sweep may
        # never see it unpaused, when the handler fills the buffer again at once).
        self.stalled_ticks = 0
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- llhttp's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.started = True
        self._target = []
        self._raw = []
        self._head_size = self._head_bytes = 0
        if self.waiting_for != HEAD:  # else a new connection's: due since the accept
            self.waiting_for = HEAD
            self.deadline = self.server.head_due

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
        http11 = version == "1.1"
        if not http11:
            check_version(version)
        method = parser.get_method().decode("ascii")
        target = b"".join(self._target).decode("latin-1")
        headers = CIMultiDictProxy(CIMultiDict(self._raw))
        hosts = headers.getall("host", ())
        if (target[:1] == "/" and "transfer-encoding" not in headers and len(hosts) == 1
                and (hosts[0] in KNOWN_HOSTS or valid_host(hosts[0]))):
            # The usual head: `request_framing` in short.
            length_header = headers.get("content-length")
            length = int(length_header) if length_header is not None else None
            chunked = False
        else:
            length, chunked = request_framing(method, target, http11, headers)
        if chunked:
            self.framing = 0
            # Its trailer's fields are counted alone (`on_header`), not with the head's.
            self._raw = []
            self._head_size = 0
        body = RequestBody(self) if chunked or length else None
        request = FastRequest(self, method, target, headers, http11, parser.should_keep_alive(),
                              length, body)
        self.started = False
        if body is not None:
            self.parsing = request
            self.waiting_for = BODY
            if headers.get("expect", "").lower() == "100-continue":
                body.expect_continue = True
                self.deadline = 0  # the body is due once "100 Continue" has gone out
            else:
                self.deadline = self.server.body_due
        else:
            self.parsing = None
            self.waiting_for = NOTHING
        if not self.serving and not self.pending:
            self._start(request)
        else:
            self.pending.append(request)
            if len(self.pending) >= _PIPELINE_DEPTH:
                self.pause_body()

    def _resume_body(self) -> None:
        """The stand-in head of `_after_upgrade` ended: the body that follows is the
        upgrade request's."""
        self.parsing, self.resuming = self.resuming, None
        self.started = False
        self.waiting_for = BODY
        self.deadline = self.resume_deadline

    def on_body(self, data: bytes) -> None:
        if self.framing != _NOT_CHUNKED:
            self.framing -= len(data)
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

    def on_chunk_complete(self) -> None:
        self.framing = 0

    def on_message_complete(self) -> None:
        self.waiting_for = NOTHING
        self.framing = _NOT_CHUNKED
        if self.discarding is not None:
            self.discarding = None
            if self.closing:
                self.close()  # its answer was the connection's last
            elif not self.serving and not self.pending:
                self.wait_idle()  # an answered request's unread body ended
        elif self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.finish()
        self.parsing = None

    # -- the request body's channel ----------------------------------------------------

    def resume_body(self) -> None:
        if self.reading_paused and len(self.pending) < _PIPELINE_DEPTH and not self.rejected:
            body = self.parsing.body if self.parsing is not None else None
            if body is None or body.buffered <= BODY_HIGH_WATER:
                self.resume_reading()

    def send_continue(self) -> None:
        if self.waiting_for == BODY and not self.deadline:
            self.deadline = self.server.body_due
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

    def pause_body(self) -> None:
        """Stop reading the socket (a full body buffer, a full pipeline, a refusal)."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.paused_at = self.server.tick
            self.transport.pause_reading()

    def wait_idle(self) -> None:
        """Nothing is being received or served: the next request is due within the
        keep-alive timeout."""
        self.waiting_for = IDLE
        self.deadline = self.server.idle_due

    def reject(self, status: int, message: str, code: str = "bad_request") -> None:
        """Refuse what the client is sending now: the refusal is answered in its turn
        (after the answers to the requests before it), then the connection closes.
        Nothing after it is read."""
        self.pause_body()
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
                answered = stream is None or stream.drop_pending_head()
                if answered:
                    self._write_and_close(reply)
                else:
                    self.close()
                if self.task is not None:
                    self.task.cancel(AnsweredByEngine(status) if answered else None)
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
        """The connection's last answer: written, then closed so that it is read
        (`closing.linger`)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(reply)
        linger(self, transport)

    def linger_until(self, deadline: int) -> None:
        """Nothing more is read or served: the sweep closes the connection at `deadline`."""
        self.rejected = self.closing = True
        self.reading_paused = False
        self.waiting_for, self.deadline = IDLE, deadline

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = self.gone = True
            self.closed_at = self.server.tick
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
                if not await serve_request(self, item) or self.closing or self.closed:
                    if self.discarding is not None and not self.closed:
                        self.closing = True  # the body's end closes (`on_message_complete`)
                        return
                    if self.pending and isinstance(self.pending[0], bytes):
                        # The next request could not be parsed: its error, then close.
                        self._write_and_close(self.pending[0])
                    else:
                        self.close()
                    return
                if self.pending:
                    item = self.pending.popleft()
                    self.resume_body()
                    continue
                self.serving = False
                if self.waiting_for == NOTHING:  # (wait_idle(), inlined: once a request)
                    self.waiting_for = IDLE
                    self.deadline = self.server.idle_due
                item = b""  # the answered request is not kept while the connection idles
                self.idle_waiter = self.loop.create_future()
                item = await self.idle_waiter
        finally:
            self.serving = False
            self.current = None
            self.idle_waiter = None
            self.task = None

    def sweep(self, tick: int) -> None:
        sweep(self, tick)
