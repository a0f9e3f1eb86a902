"""The sink of a pushed stream (`_relay_stream` in relay.py): Azure's body normalized in
the upstream connection's callback and written to the client's transport from there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from azure_openai_proxy.http.request import CHUNK_LINES, CHUNK_LINES_KEPT, FastStream, chunk
from azure_openai_proxy.normalize.annotation import AnnotationFrameTemplate
from azure_openai_proxy.normalize.steady import SteadyFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer
from azure_openai_proxy.upstream.fast import FastResponse
from azure_openai_proxy.upstream.h2 import H2Response

__all__ = ["StreamPush"]

_JOIN = b"".join


class StreamPush:
    """The sink of a pushed stream (`upstream.fast.BodySink`): each piece of Azure's body
    is normalized in the upstream connection's callback (a whole steady frame or later
    annotation frame by the normalizer's shortcuts, any other by `feed()`), and what a
    read (over HTTP/2, a DATA frame) yields is written to the client in one write.
    `outcome` is set once: the tail to end with, or the exception to raise."""

    __slots__ = ("_annotation", "_channel", "_direct", "_drop", "_framed", "_loop", "_more", "_normalizer",
                 "_out", "_pending", "_response", "_steady", "_waiter", "_write", "feed_flushes",
                 "outcome", "paused")

    def __init__(self, response: FastResponse | H2Response, out: FastStream,
                 normalizer: ChatStreamNormalizer) -> None:
        self._response = response
        self._loop = response.loop
        self._out = out
        self._normalizer = normalizer
        self._pending = b""  # normalized, not yet written
        # The pieces after `_pending` in the same read, joined once at `flush`.
        self._more: list[bytes] | None = None
        # The normalizer's shortcut for a whole steady event (`steady_relay`), or None.
        self._steady: Callable[[bytes], bytes | None] | None = None
        self._drop: Callable[[bytes], bool] | None = None  # and `annotation_drop`
        self._annotation: AnnotationFrameTemplate | None = None  # `_drop`'s template
        self._waiter: asyncio.Future[None] | None = None
        self._channel = out.channel  # for chunks written here, not by `FastStream.send`
        self._write = out.transport.write
        # HTTP/2 feeds each DATA frame alone: a steady frame leaves from `feed` framed
        # by its template (`_framed`), anything else a frame yields is flushed before
        # `feed` returns, and the connection makes no `flush` call (`feed_flushes`).
        # HTTP/1.1 feeds a read's chunks one by one and flushes once: one write. Off
        # while `_feed_events` cuts one piece into events (one write for them too).
        self._direct = self.feed_flushes = type(response) is H2Response
        self._framed: Callable[[bytes, tuple[bytes, ...]], bytes | None] | None = None
        self.outcome: bytes | BaseException | None = None
        self.paused = False

    def feed(self, data: bytes) -> None:
        steady = self._steady
        if steady is not None:  # the hot path: one steady frame, one call
            # HTTP/2, nothing pending, the client there: the chunk, framed by the template,
            # is written here (`flush()` and `FastStream.send()` inline).
            direct = self._framed  # (None first for HTTP/1.1: no other test a frame)
            if direct is not None and (self._pending or not self._out.framed or self._channel.gone):
                direct = None
            try:
                relayed = steady(data) if direct is None else direct(data, CHUNK_LINES)
                if relayed is None:
                    drop = self._drop
                    if drop is not None and drop(data):
                        return  # an async-filter annotation frame, dropped
                elif direct is not None:
                    self._write(relayed)
            except Exception as exc:  # a bug of ours, or the client's transport closed
                self._settle(exc)
                return
            if relayed is not None:
                if direct is not None:
                    if self._channel.write_paused and not self.paused:
                        self._pause()
                    return
                if self._pending:
                    self._add(relayed)
                else:  # `_add`, inline: a call per frame costs more
                    self._pending = relayed
                if self._direct:  # HTTP/2 (not framed yet, the client gone): at once
                    self.flush()
                return
            cut = data.find(b"\n\n") + 2
            if 1 < cut < len(data):
                if direct is None or not self._relay_annotated(data, cut, direct):
                    self._feed_events(data, cut)
                return
        self._feed_general(data)

    def _relay_annotated(self, data: bytes, cut: int,
                         framed: Callable[[bytes, tuple[bytes, ...]], bytes | None]) -> bool:
        """A steady content event with the async filter's annotation after it, in one
        DATA frame (a long stream's every tenth with the filter on): the first written
        framed by the template, the second dropped, and True; False (nothing done) for
        any other piece, which `_feed_events` then cuts. What `_feed_events` and `flush`
        would write and count, without their calls: a steady template's event starts with
        `content_filter_results`, an annotation's with `content_filter_offsets`, so
        neither shortcut takes the other's, and `relay` leaves the shortcuts as they are."""
        annotation = self._annotation
        if annotation is None or not annotation.drop(data, cut):
            return False
        try:
            relayed = framed(data[:cut], CHUNK_LINES)
            if relayed is None:  # (rare: the annotation's drop is taken back)
                annotation.dropped -= 1
                return False
            self._write(relayed)
        except Exception as exc:  # a bug of ours, or the client's transport closed
            self._settle(exc)
            return True
        if self._channel.write_paused and not self.paused:
            self._pause()
        return True

    def _feed_events(self, data: bytes, cut: int) -> None:
        """A piece of several events while the stream is steady: each whole event is
        offered to the shortcut alone, the rest goes to `feed()` as it would whole.
        A content frame and the async filter's annotation after it may come in one
        chunk (or DATA frame): whole, they would take the general path (~86k
        instructions more; cut, ~33k: `bench.h2frame`). The normalizer's output does not
        depend on where its input is cut (`test_stream_steady.py`); what a read yields is
        written once. A loop: a read after a pause may hold thousands of events."""
        start, size = 0, len(data)
        direct, self._direct = self._direct, False
        steady, framed, self._framed = self._steady, self._framed, None
        try:
            while 1 < cut < size:
                self.feed(data[start:cut])  # one whole event: never back here
                start = cut
                cut = data.find(b"\n\n", start) + 2
            self.feed(data[start:])
        finally:
            self._direct = direct
            if self._steady is steady:  # (the same shortcut: no bound method made again)
                self._framed = framed
            else:
                self._frame_steady()
        if direct:
            self.flush()

    def _feed_general(self, data: bytes) -> None:
        if self.outcome is not None:
            return
        normalizer = self._normalizer
        try:
            relayed = normalizer.feed(data)
        except Exception as exc:  # a bug of ours
            self._settle(exc)
            return
        self._steady, self._drop = normalizer.shortcuts()
        annotation = getattr(self._drop, "__self__", None)
        self._annotation = annotation if isinstance(annotation, AnnotationFrameTemplate) else None
        self._frame_steady()
        if normalizer.done:
            # Azure's [DONE]: the client's stream ends with it; the rest of Azure's body
            # (the chunked terminator) is queued, for `finish_in_background`.
            pending = self._take()
            self._settle(pending + relayed if pending else relayed)
        elif relayed:
            self._add(relayed)
            if self._direct:
                self.flush()

    def _frame_steady(self) -> None:
        """Over HTTP/2, the steady shortcut's framed form: its template's `relay` (the
        shortcut: `ChatStreamNormalizer.shortcuts`) given the chunks' size lines."""
        template = getattr(self._steady, "__self__", None)
        self._framed = (template.relay if self._direct
                        and isinstance(template, SteadyFrameTemplate) else None)

    def _add(self, relayed: bytes) -> None:
        """Queue `relayed` after what is pending (joined once, at `flush`)."""
        if not self._pending:
            self._pending = relayed
        elif self._more is None:
            self._more = [relayed]
        else:
            self._more.append(relayed)

    def _take(self) -> bytes:
        """What is pending, joined, and nothing pending after."""
        pending, more = self._pending, self._more
        self._pending = b""
        if more is None:
            return pending
        self._more = None
        more.insert(0, pending)
        return b"".join(more)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = b""
            more = self._more
            if more is not None:  # several pieces in this read (`_take`, inline)
                self._more = None
                more.insert(0, pending)
                pending = b"".join(more)
            out = self._out
            try:
                if out.framed and not self._channel.gone:  # `out.send()`, inline
                    size = len(pending)
                    self._write(_JOIN((CHUNK_LINES[size], pending, b"\r\n"))
                                if size < CHUNK_LINES_KEPT else chunk(pending))
                    if self._channel.write_paused and not self.paused:
                        self._pause()
                elif not out.send(pending) and not self.paused:
                    self._pause()
            except Exception as exc:  # the client left (ClientDisconnected)
                self._settle(exc)

    def _pause(self) -> None:
        """The client stopped reading: so does Azure's socket, until `_relay_stream` has
        seen it drain."""
        self.paused = True
        self._response.pause()
        self._wake()

    def end(self) -> None:
        self.flush()
        if self.outcome is None:
            try:
                self._settle(self._normalizer.finish())
            except Exception as exc:  # a bug of ours
                self._settle(exc)

    def fail(self, error: Exception) -> None:
        self.flush()
        if self.outcome is None:
            self._settle(error)

    def _settle(self, outcome: bytes | BaseException) -> None:
        self.outcome = outcome
        self._steady = self._framed = None
        self._response.detach()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """To await until the outcome is settled or the client must be waited for."""
        waiter = self._loop.create_future()
        if self.outcome is not None or self.paused:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter
