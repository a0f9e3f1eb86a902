"""One HTTP/2 connection to an upstream: an asyncio Protocol that parses frames straight
into its streams' slots (`_Stream`), answers SETTINGS and PING, keeps both directions'
flow control, and fails the right streams on RST_STREAM, GOAWAY or a lost connection.

Our own framing, not the `h2` package's state machine: a received 150-byte DATA frame
costs about a tenth of the instructions here (bench/README.md, issue 15), and a relayed
stream is made of nothing else. Header blocks are read by `headers.py`; SETTINGS and
WINDOW_UPDATE (the server's limits on what we send) are handled by `control.py`.

Errors a stream fails with:

    before its answer's head   _Refused (GOAWAY above its id, REFUSED_STREAM: never
                               processed, safe to send again)
                               UpstreamUnreachable (reset, lost connection, bad frames)
                               UpstreamHeadTooLarge (a header block past 64 KiB or 128)
    after the head             UpstreamStreamBroken (reset, lost connection)
    either                     UpstreamTimeout (nothing heard for read_timeout while
                               the caller waited; or the connection silent, a PING
                               unanswered: `watch.py`)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from azure_openai_proxy.errors import UpstreamHeadTooLarge, UpstreamInvalidAnswer, UpstreamUnreachable
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.control import on_settings, on_window_update
from azure_openai_proxy.upstream.h2.frames import END_STREAM, FRAME_HEAD, OUR_MAX_FRAME, PADDED, ProtocolError
from azure_openai_proxy.upstream.h2.headers import HeaderBlocks, MalformedHead, read_head
from azure_openai_proxy.upstream.h2.stream import _CREDIT_AT, _Stream
from azure_openai_proxy.upstream.h2.watch import arm
from azure_openai_proxy.upstream.transport import UpstreamStreamBroken, compressed

__all__ = ["_H2Connection", "_Refused"]

# A server's concurrency limit before its SETTINGS say (RFC 9113 advises at least 100);
# the transport waits for them before the first request, so this is rarely used.
_ASSUMED_STREAMS = 100
_PAUSED_REPLIES = 1024  # acks written while the server does not read ours (`_reply`)
_CONNECTION_CREDIT_AT = f.CONNECTION_WINDOW // 2  # received bytes credited back at once
_BROKEN = "The connection to Azure OpenAI broke while the response was being read."


class _Refused(Exception):
    """The server did not process the stream (GOAWAY, REFUSED_STREAM): send it again."""


class _H2Connection(asyncio.Protocol):
    """An HTTP/2 client connection. `open_stream` starts a request; frames are parsed in
    `data_received` and dispatched to `_on_*`; `settled` is done at the server's first
    SETTINGS (its concurrency limit known)."""

    __slots__ = (
        "blocked", "blocks", "buf", "closed", "draining", "host", "idle_since", "loop",
        "max_frame", "max_streams", "next_id", "on_change", "pinged", "read_timeout", "replies",
        "send_window", "settled", "stream_window", "streams", "timer", "transport", "unacked",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, read_timeout: float) -> None:
        self.loop = loop
        self.host = host
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_streams = _ASSUMED_STREAMS
        self.max_frame = 16384  # what the server accepts
        self.send_window = 65535  # the connection's, for request bodies
        self.stream_window = 65535  # each new stream's, from the server's SETTINGS
        self.unacked = 0  # received bytes not yet credited to the connection's window
        self.blocks = HeaderBlocks()
        self.settled: asyncio.Future[None] = loop.create_future()
        self.draining = False  # GOAWAY (or ids spent): no new streams
        self.closed = False
        self.write_paused = False
        self.replies = 0  # PING and SETTINGS acks written while writing is paused
        self.blocked: set[_Stream] = set()  # streams waiting to send body bytes
        self.idle_since = loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.pinged = False  # a liveness PING is unanswered (`watch.py`)
        # Told when a stream ends or the room for streams changes (the pool's hook).
        self.on_change: Callable[[_H2Connection], None] | None = None

    # -- for the transport ---------------------------------------------------------

    def has_room(self) -> bool:
        # (`_OriginPool.room` makes the same test inline, once a request)
        return (not self.draining and not self.closed
                and len(self.streams) < self.max_streams)

    def open_stream(self, block: bytes, end_stream: bool, body: bytes = b"") -> _Stream:
        """A new stream with the request's header block written (END_STREAM if no body
        follows), and `body`, the whole of it, in the same write when it `fits`."""
        sid = self.next_id
        self.next_id += 2
        if self.next_id > 0x7FFFFFFF:
            self.draining = True  # stream ids spent: a new connection for the next
        stream = _Stream(self, sid, self.stream_window)
        self.streams[sid] = stream
        stream.sent_end = end_stream or bool(body)
        if body:  # the usual request: one write, not two
            size = len(body)
            self.send_window -= size
            stream.send_window -= size
            if len(block) <= self.max_frame:  # `headers_frames` and `data_frame`, inline
                self._write(b"".join((
                    FRAME_HEAD.pack(len(block) << 8 | f.HEADERS, f.END_HEADERS, sid), block,
                    FRAME_HEAD.pack(size << 8, END_STREAM, sid), body)))
            else:
                self._write(f.headers_frames(sid, block, False, self.max_frame)
                            + f.data_frame(sid, body, True))
        else:
            self._write(f.headers_frames(sid, block, end_stream, self.max_frame))
        return stream

    def fits(self, body: bytes) -> bool:
        """Whether `body` may go whole in one DATA frame of a new stream now."""
        size = len(body)
        return (size <= self.max_frame and size <= self.send_window
                and size <= self.stream_window and not self.write_paused)

    def send_data(self, stream: _Stream, data: bytes, at: int = 0) -> int:
        """Write as much of `data` from `at` as both windows allow; how much was written."""
        size = min(len(data) - at, self.send_window, stream.send_window, self.max_frame)
        if size <= 0 or self.write_paused or self.closed:
            return 0
        self.send_window -= size
        stream.send_window -= size
        self._write(f.data_frame(stream.sid, data[at:at + size], False))
        return size

    def end_body(self, stream: _Stream) -> None:
        if stream.sid in self.streams:  # not answered, nor reset, already
            self._write(f.data_frame(stream.sid, b"", True))
            stream.sent_end = True

    def credit(self, sid: int, size: int) -> None:
        """The caller read `size` bytes of stream `sid`: Azure may send as much more."""
        if sid in self.streams:
            self._write(f.window_update(sid, size))

    def abandon(self, stream: _Stream) -> None:
        """The caller is done with `stream`; one not ended is reset (CANCEL)."""
        self.blocked.discard(stream)
        if self.streams.pop(stream.sid, None) is not None:
            if not stream.ended:
                stream.fail(UpstreamStreamBroken(_BROKEN))
                self._write(f.rst_frame(stream.sid, f.CANCEL))
            self._changed()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None and not self.closed:
            self.closed = True
            # Aborted if the server is not reading: what is queued would never go.
            (self.transport.abort if self.write_paused else self.transport.close)()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _reply(self, data: bytes) -> None:
        """An ack the server asked for. A server that asks and asks and does not read
        (CVE-2019-9512's flood) would grow our write buffer without end: while writing
        is paused, only `_PAUSED_REPLIES` are written, then the connection ends."""
        if self.write_paused:
            self.replies += 1
            if self.replies > _PAUSED_REPLIES:
                raise ProtocolError("acks asked for and not read", f.ENHANCE_YOUR_CALM)
        self._write(data)

    def _changed(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.draining:
                self.close()
        if self.on_change is not None:
            self.on_change(self)

    # -- asyncio's callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() != "h2":
            return  # an HTTP/1.1 server: no preface (junk to it); `_open` closes us
        self.transport.write(f.CLIENT_PREFACE)
        arm(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        unpack = FRAME_HEAD.unpack_from
        streams, blocks = self.streams, self.blocks
        received = 0  # bytes of the plain DATA frames below, for the connection's window
        while True:
            try:
                while size - pos >= 9:
                    head, flags, sid = unpack(buf, pos)
                    length = head >> 8
                    start = pos + 9  # (each computed once: a frame's arithmetic)
                    end = start + length
                    if length > OUR_MAX_FRAME:
                        raise ProtocolError("a frame larger than allowed", f.FRAME_SIZE_ERROR)
                    if end > size:
                        break
                    if not head & 0xFF:  # DATA, the hot path: a stream's body
                        if blocks.sid:  # RFC 9113 §6.10: nothing inside a block
                            raise ProtocolError("a header block was interrupted")
                        stream = streams.get(sid)  # (a reserved bit set: not found)
                        if (stream is not None and (sink := stream.sink) is not None
                                and not flags and length
                                and not stream.paused and stream.decoder is None):
                            # `_on_data`'s pushed case, inline for a frame without
                            # flags (no padding, not the last): a Python call less a
                            # frame, and the connection's window counted once a read.
                            received += length
                            stream.heard = True
                            stream.unread += length
                            sink.feed(buf[start:end])
                            # (a sink that flushes from `feed` needs no call; else,
                            # unless it detached itself, it is flushed)
                            if not stream.sink_flushes and stream.sink is sink:
                                sink.flush()
                            if stream.unread >= _CREDIT_AT:
                                self._credit(stream)
                        else:
                            self._on_data(sid & 0x7FFFFFFF, flags, buf, start, end)
                    else:
                        self._on_frame(head & 0xFF, flags, sid & 0x7FFFFFFF, buf[start:end])
                    pos = end
                break
            except ProtocolError as exc:
                self._abort(str(exc), exc.code)
                return
            except Exception as exc:
                # A stream's own failure (its body's decoding, its sink's): it fails
                # alone, as in fast/, and the frames after it are read on.
                if not self._stream_failed(sid & 0x7FFFFFFF, exc):
                    return
                pos = end
        self.buf = buf[pos:] if pos < size else b""
        if received:
            self.unacked += received
            if self.unacked >= _CONNECTION_CREDIT_AT:
                self._acknowledge()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.draining = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.settled.done():
            self.settled.set_exception(UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {self.host}: the connection closed during "
                "the HTTP/2 handshake (over http://, upstream.http2 needs a server speaking "
                "h2c with prior knowledge)", request_sent=False))
            self.settled.exception()  # seen: nobody may be waiting any more
        self._fail_all("the server closed the connection")

    def pause_writing(self) -> None:
        self.write_paused = True
        self.replies = 0

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_blocked()

    # -- frames --------------------------------------------------------------------

    def _acknowledge(self) -> None:
        """Half the connection's window received (`unacked`): credited back."""
        self._write(f.window_update(0, self.unacked))
        self.unacked = 0

    def _credit(self, stream: _Stream) -> None:
        """A pushed stream's bytes were read as they came: its window is credited."""
        if stream.unread > f.STREAM_WINDOW:  # a server ignoring the window we gave
            raise ProtocolError("DATA past the stream's window", f.FLOW_CONTROL_ERROR)
        self.credit(stream.sid, stream.unread)
        stream.credited += stream.unread
        stream.unread = 0

    def _on_data(self, sid: int, flags: int, buf: bytes, start: int, end: int) -> None:
        length = end - start
        self.unacked += length
        if self.unacked >= _CONNECTION_CREDIT_AT:
            self._acknowledge()
        stream = self.streams.get(sid)
        if stream is None:  # reset by us, or ended: its bytes count for the connection only
            f.check_stream(f.DATA, sid, self.next_id)  # unless it never was
            return
        stream.heard = True
        stream.unread += length
        if flags & PADDED:
            if length == 0 or buf[start] >= length:
                raise ProtocolError("bad padding")
            end -= buf[start]
            stream.padding += length - (end - start) + 1
            start += 1
        if end > start:
            sink = stream.sink
            if sink is not None and not stream.paused and stream.decoder is None:
                # `_Stream.received`'s pushed case, inline: a call less on every frame
                # (a draining stream has no sink).
                sink.feed(buf[start:end])
                if stream.sink is sink:  # else it detached itself
                    sink.flush()
                if stream.unread >= _CREDIT_AT:  # the window's check only here: no cost
                    self._credit(stream)
            elif stream.started:
                if stream.unread > f.STREAM_WINDOW:  # a server ignoring the window we gave
                    raise ProtocolError("DATA past the stream's window", f.FLOW_CONTROL_ERROR)
                stream.received(buf[start:end])
            else:
                self._malformed(stream, "a body before the head")
                return
        if flags & END_STREAM:
            self._end(stream)

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.blocks.sid and kind != f.CONTINUATION:
            raise ProtocolError("a header block was interrupted")
        f.check_stream(kind, sid, self.next_id)
        if kind == f.HEADERS or kind == f.CONTINUATION:
            block = self.blocks.frame(kind, flags, sid, payload)
            if block is not None:
                self._on_block(*block)
        elif kind == f.SETTINGS:
            on_settings(self, flags, payload)
        elif kind == f.WINDOW_UPDATE:
            on_window_update(self, sid, payload)
        elif kind == f.PING:
            if len(payload) != 8:
                raise ProtocolError("a PING is 8 bytes", f.FRAME_SIZE_ERROR)
            if not flags & f.ACK:
                self._reply(f.ping_ack(payload))
            else:
                self.pinged = False  # alive (`watch.py`)
        elif kind == f.RST_STREAM:
            self._on_reset(sid, payload)
        elif kind == f.GOAWAY:
            self._on_goaway(payload)
        elif kind == f.PUSH_PROMISE:
            raise ProtocolError("a push promise, though we disabled push")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 says.

    def _on_block(self, sid: int, end_stream: bool,
                  fields: list[tuple[bytes, bytes]] | None) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.heard = True
        if fields is None:
            self._reset(stream, UpstreamHeadTooLarge(
                "Azure OpenAI's answer was refused: its head is larger than "
                f"{f.MAX_HEAD_BYTES} bytes or {f.MAX_HEADERS} headers."))
            return
        if stream.started:
            if not end_stream:  # trailers must end the stream
                self._malformed(stream, "trailers without END_STREAM")
            else:
                self._end(stream)
            return
        try:
            status, headers = read_head(fields)
        except MalformedHead as exc:
            self._malformed(stream, str(exc))
            return
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            if end_stream:
                self._malformed(stream, "an answer ended after an interim head")
            return
        try:
            inflated = "content-encoding" in headers and compressed(headers)
        except UpstreamInvalidAnswer as exc:
            self._reset(stream, exc)
            return
        stream.head(status, headers, inflated)
        if end_stream:  # a bodyless answer
            self._end(stream)

    def _on_reset(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError("a RST_STREAM's size", f.FRAME_SIZE_ERROR)
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        self.blocked.discard(stream)
        code = int.from_bytes(payload, "big")
        if code == f.REFUSED_STREAM and not stream.started:
            stream.fail(_Refused())
        else:
            stream.fail(self._failure(stream, f"the server reset the stream (code {code})"))
        self._changed()

    def _on_goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            raise ProtocolError("a GOAWAY's size", f.FRAME_SIZE_ERROR)
        last, _ = f.parse_goaway(payload)
        self.draining = True  # streams up to `last` finish; new requests go elsewhere
        for sid in [sid for sid in self.streams if sid > last]:
            stream = self.streams.pop(sid)
            self.blocked.discard(stream)
            # Not processed, says the server; one answered already contradicts it.
            stream.fail(self._failure(stream, "GOAWAY") if stream.started else _Refused())
        self._changed()

    # -- the streams ---------------------------------------------------------------

    def _end(self, stream: _Stream) -> None:
        if not stream.started:  # END_STREAM on a stream without an answer's head
            self._malformed(stream, "the stream ended without an answer")
            return
        if stream.length >= 0 and stream.body_cut():
            self._malformed(stream, "a body not as long as its content-length")
            return
        stream.finish()  # first: if its decoder's tail is bad, the stream is still ours
        self.streams.pop(stream.sid, None)
        self.blocked.discard(stream)
        if not stream.sent_end:
            # Answered before the whole request body (a 413, a 401 to an upload): the rest
            # is not sent; our half is closed with a reset, else the server holds the
            # stream open against its MAX_CONCURRENT_STREAMS for good.
            self._write(f.rst_frame(stream.sid, f.CANCEL))
        self._changed()

    def _reset(self, stream: _Stream, error: Exception, code: int = f.CANCEL) -> None:
        self.streams.pop(stream.sid, None)
        self.blocked.discard(stream)
        self._write(f.rst_frame(stream.sid, code))
        stream.fail(error)  # last but `_changed`: its sink may raise
        self._changed()

    def _malformed(self, stream: _Stream, reason: str) -> None:
        """A malformed answer (RFC 9113 §8.1.1): a stream error, the others go on."""
        self._reset(stream, self._failure(stream, f"a malformed answer ({reason})"),
                    f.PROTOCOL_ERROR)

    def _stream_failed(self, sid: int, exc: Exception) -> bool:
        """A frame of stream `sid` raised `exc`: the stream fails; whether to read on."""
        stream = self.streams.get(sid)
        if stream is None or self.blocks.sid:
            self._abort(f"{type(exc).__name__} on stream {sid}", f.INTERNAL_ERROR)
            return False
        with contextlib.suppress(Exception):  # its sink raising again: it is reset all the same
            self._reset(stream, self._failure(stream, f"a bad answer ({type(exc).__name__})"))
        return True

    def _failure(self, stream: _Stream, reason: str) -> Exception:
        if stream.started:
            return UpstreamStreamBroken(_BROKEN)
        return UpstreamUnreachable(f"Cannot reach Azure OpenAI at {self.host}: {reason}")

    def _fail_all(self, reason: str) -> None:
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for stream in streams.values():
            stream.fail(self._failure(stream, reason))
        self._changed()

    def _abort(self, reason: str, code: int) -> None:
        """The server broke the protocol: GOAWAY, every stream fails, the end."""
        self._write(f.goaway_frame(0, code))  # the last stream *we* took: none
        self.draining = True
        self._fail_all(f"the answer is not valid HTTP/2 ({reason})")
        self.close()

    def _wake_blocked(self) -> None:
        """Room to send: the streams waiting for it go on, their read timeout afresh
        (as fast/'s, which counts from each wait for a writable socket)."""
        for stream in list(self.blocked):
            stream.heard = True
            stream.wake()
