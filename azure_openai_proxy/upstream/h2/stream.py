"""One request's stream on an HTTP/2 connection (`_Stream`, a slot the connection's
callbacks fill: no task of its own) and the answer the caller reads (`H2Response`).

As with `fast/`, a stream's body is pulled (`chunks()`) or pushed into a `BodySink` from
the connection's callback (`H2Response.relay`), with `pause()`/`resume()` for a slow
client: while paused the body is queued and the stream's window is not credited back, so
Azure stops sending on this stream (and only this one) once the window is spent."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from azure_openai_proxy.upstream.fast.connection import BodySink
from azure_openai_proxy.upstream.h2.frames import STREAM_WINDOW
from azure_openai_proxy.upstream.transport import Inflater, answer_too_large

if TYPE_CHECKING:
    from azure_openai_proxy.upstream.h2.connection import _H2Connection

__all__ = ["_CREDIT_AT", "H2Response", "_Stream", "quiet_streams"]

# The stream's window is credited back once the caller has read this much of it.
_CREDIT_AT = STREAM_WINDOW // 2


class _Stream:
    """A request's state on its connection. `received`, `finish` and `fail` are called
    from the connection's callbacks; the caller `wait()`s for progress and `take()`s the
    body. `heard` and `deadline` are the read timeout's, checked by the connection's one
    timer for all its streams (see `watch.py`)."""

    __slots__ = ("body", "bodyless", "conn", "credited", "deadline", "decoder", "draining",
                 "ended", "error", "headers", "heard", "length", "padding", "paused",
                 "send_window", "sent_end", "sid", "sink", "sink_flushes", "started", "status",
                 "unread", "waiter")

    def __init__(self, conn: _H2Connection, sid: int, send_window: int) -> None:
        self.conn = conn
        self.sid = sid
        self.send_window = send_window  # what Azure lets us send of the request body
        self.sent_end = False  # our END_STREAM went: the request is whole on the wire
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.started = False  # the answer's head arrived
        self.ended = False  # the answer ended whole, or failed: the slot is free
        self.error: Exception | None = None
        self.body: deque[bytes] = deque()
        self.unread = 0  # bytes on the wire received and not yet credited back
        self.credited = 0  # and credited back: with `unread`, every DATA byte received
        self.padding = 0  # of them, padding
        self.length = -1  # the body's content-length, when it must match (-1: not known)
        self.bodyless = False  # a HEAD request's: its content-length is not its body's
        self.decoder: Inflater | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.heard = False
        self.deadline = conn.loop.time() + conn.read_timeout
        self.sink: BodySink | None = None  # pushed: the body goes here as it arrives
        # Its sink leaves nothing pending after `feed` (its `feed_flushes`, read once at
        # `push_to`): the connection's DATA loop then makes no `flush` call a frame.
        self.sink_flushes = False
        self.paused = False  # pushed, but the sink's reader is slow: queued meanwhile
        self.draining = False  # nobody reads: its last bytes are awaited, then dropped

    def head(self, status: int, headers: CIMultiDict[str], inflated: bool) -> None:
        """The answer's head; `inflated`: its body is gzip or deflate (`compressed`)."""
        self.status = status
        if inflated:
            self.decoder = Inflater()
        length = headers.get("content-length")
        if length is not None and length.isdigit() and not self.bodyless and status not in (
                204, 304):
            self.length = int(length)  # checked at the end (`body_cut`), as fast/ does
        self.headers = headers
        self.started = True
        if self.waiter is not None:  # `wake`'s test first: no call when nobody waits
            self.wake()

    def received(self, data: bytes) -> None:
        if self.decoder is not None:
            data = self.decoder.decompress(data)
        if not data or self.draining:
            return
        sink = self.sink
        if sink is not None and not self.paused:  # pushed: read at once, credited at once
            sink.feed(data)
            if self.sink is sink:  # else it detached itself
                sink.flush()
            if self.unread >= _CREDIT_AT:
                self.conn.credit(self.sid, self.unread)
                self.credited += self.unread
                self.unread = 0
            return
        self.body.append(data)
        if self.waiter is not None:
            self.wake()

    def body_cut(self) -> bool:
        """Whether the body that ended differs from its content-length (RFC 9113
        §8.1.1: malformed; fast/ calls a body cut short broken)."""
        return self.length >= 0 and self.credited + self.unread - self.padding != self.length

    def finish(self) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self.body.append(tail)
        self.ended = True
        self._settle()

    def fail(self, error: Exception) -> None:
        if not self.ended:
            self.ended = True
            self.error = error
            self._settle()

    def _settle(self) -> None:
        """The answer is over: a pushed one tells its sink (unless paused: `resume`)."""
        sink = self.sink
        if sink is None or self.paused:
            self.wake()
            return
        if self.body:
            sink.feed(self.take())
            if self.sink is not sink:
                return
            sink.flush()
        self.sink = None
        if self.error is not None:
            sink.fail(self.error)
        else:
            sink.end()

    def push_to(self, sink: BodySink) -> None:
        self.sink = sink
        self.sink_flushes = getattr(sink, "feed_flushes", False) is True
        if self.paused:
            return  # `resume` pushes what is queued
        if self.body:
            sink.feed(self.take())
            if self.sink is not sink:
                return
            sink.flush()
        if self.ended:
            self._settle()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            sink = self.sink
            if sink is not None:
                self.push_to(sink)

    def take(self) -> bytes:
        """Every body byte received and not yet taken; the window is credited back as
        the caller reads (a slow reader holds back its own stream, no other)."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        if self.unread >= _CREDIT_AT and not self.ended:
            self.conn.credit(self.sid, self.unread)
            self.credited += self.unread
            self.unread = 0
        return data

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """To await until something happens (head, body, the end, a failure, a window
        to send in); the caller looks at the state after."""
        waiter = self.conn.loop.create_future()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()  # one waiter at a time; never expected
        self.waiter = waiter
        return waiter

    def raise_error(self) -> None:
        error = self.error
        if error is not None:
            try:
                raise error
            finally:
                del error  # no reference cycle through the traceback


class H2Response:
    """An answer whose head has arrived; its body is read from the stream's slot."""

    __slots__ = ("_stream", "headers", "loop", "status")

    def __init__(self, stream: _Stream) -> None:
        self._stream: _Stream | None = stream
        self.loop = stream.conn.loop
        self.status = stream.status
        self.headers = stream.headers

    async def read(self, limit: int) -> bytes:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise answer_too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for piece in self.chunks():
            size += len(piece)
            if size > limit:
                raise answer_too_large(limit)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        stream = self._stream
        while stream is not None and self._stream is stream:
            if stream.body:
                yield stream.take()
            elif stream.error is not None:
                stream.raise_error()
            elif stream.ended:
                return
            else:
                await stream.wait()

    def relay(self, sink: BodySink) -> None:
        """Push the body into `sink` from the connection's callback, as `FastResponse`
        does (see `BodySink`); what arrived already goes first, now. `close()`,
        `finish_in_background()` or `detach()` stops it."""
        stream = self._stream
        if stream is None:
            raise RuntimeError("relay() after close()")
        stream.push_to(sink)

    def detach(self) -> None:
        """Stop pushing into the sink; what follows is queued (as for `chunks()`)."""
        if self._stream is not None:
            self._stream.sink = None

    def pause(self) -> None:
        """The sink's reader is slow: queue the body, and credit no window meanwhile."""
        if self._stream is not None:
            self._stream.paused = True

    def resume(self) -> None:
        if self._stream is not None:
            self._stream.resume()

    def close(self) -> None:
        """Done with the answer: a stream not yet ended is reset (CANCEL); the
        connection goes on serving the others."""
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream.sink = None
            stream.conn.abandon(stream)

    def finish_in_background(self) -> None:
        """The useful part was relayed (`[DONE]`): the stream's end (END_STREAM, usually
        in the next frame) is awaited without a reader, its bytes dropped; a stream still
        open at the connection's next read-timeout check is reset then."""
        stream = self._stream
        if stream is None:
            return
        self._stream = None
        stream.sink = None
        if stream.ended:
            stream.conn.abandon(stream)
            return
        stream.draining = True
        stream.body.clear()


def quiet_streams(streams: Iterable[_Stream], now: float, timeout: float
                  ) -> tuple[list[_Stream], list[_Stream]]:
    """The read timeout's check over a connection's streams, every eighth of `timeout`:
    those whose caller has waited `timeout` without a frame, or whose sink has (pushed,
    not paused), are stalled; a caller not waiting (its client is slow) is not timed.
    And those left to drain whose end did not come in one check's time."""
    stalled = []
    drained = []
    for stream in streams:
        if stream.draining:
            drained.append(stream)
        elif stream.heard or not (stream.waiter is not None or (
                stream.sink is not None and not stream.paused)):
            stream.heard = False
            stream.deadline = now + timeout
        elif now >= stream.deadline:
            stalled.append(stream)
    return stalled, drained
