"""One HTTP/2 connection to an upstream: an asyncio Protocol that parses frames straight
into its streams' slots (`_Stream`), answers SETTINGS and PING, keeps both directions'
flow control, and fails the right streams on RST_STREAM, GOAWAY or a lost connection.

Our own framing, not the `h2` package's state machine: a received 150-byte DATA frame
costs about a tenth of the instructions here (bench/README.md, issue 15), and a relayed
stream is made of nothing else. Header blocks are decoded by `hpack_decoder.py`.

Errors a stream fails with:

    before its answer's head   _Refused (GOAWAY above its id, REFUSED_STREAM: never
                               processed, safe to send again)
                               UpstreamUnreachable (reset, lost connection, bad frames)
                               UpstreamHeadTooLarge (a header block past 64 KiB or 128)
    after the head             UpstreamStreamBroken (reset, lost connection)
    either                     UpstreamTimeout (nothing heard for read_timeout while
                               the caller waited)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from multidict import CIMultiDict

from azure_openai_proxy.errors import UpstreamHeadTooLarge, UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.frames import END_STREAM, FRAME_HEAD, OUR_MAX_FRAME, PADDED
from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder
from azure_openai_proxy.upstream.h2.stream import _CREDIT_AT, _Stream
from azure_openai_proxy.upstream.transport import UpstreamStreamBroken

__all__ = ["_H2Connection", "_Refused"]

# A server's concurrency limit before its SETTINGS say (RFC 9113 advises at least 100);
# the transport waits for them before the first request, so this is rarely used.
_ASSUMED_STREAMS = 100
_QUIET_CHECKS = 8  # the read timeout is checked this many times per timeout (as fast/)
_BLOCK_LIMIT = 1 << 20
_CONNECTION_CREDIT_AT = f.CONNECTION_WINDOW // 2  # a header block past this ends the connection (HPACK state)
_BROKEN = "The connection to Azure OpenAI broke while the response was being read."
_STALLED = "Azure OpenAI stopped sending data (read timeout) in the middle of the response."


class _Refused(Exception):
    """The server did not process the stream (GOAWAY, REFUSED_STREAM): send it again."""


class _ProtocolError(Exception):
    """The server broke HTTP/2: the connection ends (GOAWAY with `code`)."""

    def __init__(self, message: str, code: int = f.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _H2Connection(asyncio.Protocol):
    """An HTTP/2 client connection. `open_stream` starts a request; frames are parsed in
    `data_received` and dispatched to `_on_*`; `settled` is done at the server's first
    SETTINGS (its concurrency limit known)."""

    __slots__ = (
        "blocked", "buf", "closed", "decoder", "draining", "host", "idle_since", "loop",
        "max_frame", "max_streams", "next_id", "on_change", "pending_block", "read_timeout",
        "send_window", "settled", "stream_window", "streams", "timer", "transport",
        "unacked", "write_paused",
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
        self.decoder = HpackDecoder()
        # A header block spread over CONTINUATION frames: (stream id, END_STREAM, parts).
        self.pending_block: tuple[int, bool, list[bytes]] | None = None
        self.settled: asyncio.Future[None] = loop.create_future()
        self.draining = False  # GOAWAY (or ids spent): no new streams
        self.closed = False
        self.write_paused = False
        self.blocked: set[_Stream] = set()  # streams waiting to send body bytes
        self.idle_since = loop.time()
        self.timer: asyncio.TimerHandle | None = None
        # Told when a stream ends or the room for streams changes (the pool's hook).
        self.on_change: Callable[[_H2Connection], None] | None = None

    # -- for the transport ---------------------------------------------------------

    def has_room(self) -> bool:
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
        if body:  # the usual request: one write, not two
            size = len(body)
            self.send_window -= size
            stream.send_window -= size
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

    def send_data(self, stream: _Stream, data: bytes) -> int:
        """Write as much of `data` as both windows allow; how much was written."""
        size = min(len(data), self.send_window, stream.send_window, self.max_frame)
        if size <= 0 or self.write_paused or self.closed:
            return 0
        self.send_window -= size
        stream.send_window -= size
        self._write(f.data_frame(stream.sid, data[:size], False))
        return size

    def end_body(self, stream: _Stream) -> None:
        if stream.sid in self.streams:  # not answered, nor reset, already
            self._write(f.data_frame(stream.sid, b"", True))

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
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

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
        transport_ = self.transport
        transport_.write(f.PREFACE + f.settings_frame({
            f.ENABLE_PUSH: 0, f.INITIAL_WINDOW_SIZE: f.STREAM_WINDOW,
            f.MAX_HEADER_LIST_SIZE: f.MAX_HEAD_BYTES * 2,
        }) + f.window_update(0, f.CONNECTION_WINDOW - 65535))
        self._arm()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        unpack = FRAME_HEAD.unpack_from
        try:
            while size - pos >= 9:
                head, flags, sid = unpack(buf, pos)
                end = pos + 9 + (head >> 8)
                if head >> 8 > OUR_MAX_FRAME:
                    raise _ProtocolError("a frame larger than allowed", f.FRAME_SIZE_ERROR)
                if end > size:
                    break
                if not head & 0xFF:  # DATA, the hot path: a stream's body
                    self._on_data(sid & 0x7FFFFFFF, flags, buf, pos + 9, end)
                else:
                    self._on_frame(head & 0xFF, flags, sid & 0x7FFFFFFF, buf[pos + 9:end])
                pos = end
        except _ProtocolError as exc:
            self._abort(str(exc), exc.code)
            return
        self.buf = buf[pos:] if pos < size else b""

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

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_blocked()

    # -- frames --------------------------------------------------------------------

    def _on_data(self, sid: int, flags: int, buf: bytes, start: int, end: int) -> None:
        length = end - start
        self.unacked += length
        if self.unacked >= _CONNECTION_CREDIT_AT:
            self._write(f.window_update(0, self.unacked))
            self.unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            return  # reset by us, or ended: its bytes count for the connection only
        stream.heard = True
        stream.unread += length
        if flags & PADDED:
            if length == 0 or buf[start] >= length:
                raise _ProtocolError("bad padding")
            end -= buf[start]
            start += 1
        if end > start:
            sink = stream.sink
            if sink is not None and not stream.paused and stream.decoder is None:
                # `_Stream.received`'s pushed case, inline: a call less on every frame
                # (a draining stream has no sink).
                sink.feed(buf[start:end])
                if stream.sink is sink:  # else it detached itself
                    sink.flush()
                if stream.unread >= _CREDIT_AT:
                    self.credit(sid, stream.unread)
                    stream.unread = 0
            else:
                stream.received(buf[start:end])
        if flags & END_STREAM:
            self._end(stream)

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.pending_block is not None and kind != f.CONTINUATION:
            raise _ProtocolError("a header block was interrupted")
        if kind == f.HEADERS or kind == f.CONTINUATION:
            self._on_headers(kind, flags, sid, payload)
        elif kind == f.SETTINGS:
            self._on_settings(flags, payload)
        elif kind == f.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == f.PING:
            if len(payload) != 8:
                raise _ProtocolError("a PING is 8 bytes", f.FRAME_SIZE_ERROR)
            if not flags & f.ACK:
                self._write(f.ping_ack(payload))
        elif kind == f.RST_STREAM:
            self._on_reset(sid, payload)
        elif kind == f.GOAWAY:
            self._on_goaway(payload)
        elif kind == f.PUSH_PROMISE:
            raise _ProtocolError("a push promise, though we disabled push")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 says.

    def _on_headers(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == f.HEADERS:
            if self.pending_block is not None or sid == 0:
                raise _ProtocolError("an unexpected HEADERS frame")
            start, end = 0, len(payload)
            if flags & f.PADDED:
                if not payload or payload[0] >= len(payload):
                    raise _ProtocolError("bad padding")
                start, end = 1, end - payload[0]
            if flags & f.PRIORITY_FLAG:
                start += 5
            self.pending_block = (sid, bool(flags & f.END_STREAM), [payload[start:end]])
        else:
            pending = self.pending_block
            if pending is None or pending[0] != sid:
                raise _ProtocolError("an unexpected CONTINUATION frame")
            pending[2].append(payload)
            if sum(map(len, pending[2])) > _BLOCK_LIMIT:
                raise _ProtocolError("a header block without end")
        if flags & f.END_HEADERS:
            pending = self.pending_block
            assert pending is not None
            self.pending_block = None
            self._on_block(pending[0], pending[1], b"".join(pending[2]))

    def _on_block(self, sid: int, end_stream: bool, block: bytes) -> None:
        try:
            # Decoded even for a stream we reset: the table must follow the server's.
            fields = self.decoder.decode(block, f.MAX_HEAD_BYTES * 2)
        except HeaderBlockError as exc:
            raise _ProtocolError(f"a bad header block ({exc})", f.COMPRESSION_ERROR) from None
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.heard = True
        if len(block) > f.MAX_HEAD_BYTES or len(fields) > f.MAX_HEADERS:
            self._reset(stream, UpstreamHeadTooLarge(
                "Azure OpenAI's answer was refused: its head is larger than "
                f"{f.MAX_HEAD_BYTES} bytes or {f.MAX_HEADERS} headers."))
            return
        if not stream.started:
            status = 0
            headers: CIMultiDict[str] = CIMultiDict()
            for name, value in fields:
                if name == b":status":
                    status = int(value) if value.isdigit() else 0
                elif not name.startswith(b":"):
                    headers.add(name.decode("latin-1"), value.decode("latin-1"))
            if status < 100 or status > 999:
                self._reset(stream, UpstreamUnreachable(
                    f"Cannot reach Azure OpenAI at {self.host}: an answer without a status"))
                return
            if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
                return
            stream.head(status, headers)
        if end_stream:  # the answer's end (a bodyless answer, or trailers)
            self._end(stream)

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & f.ACK:
            return
        if len(payload) % 6:
            raise _ProtocolError("a SETTINGS frame's size", f.FRAME_SIZE_ERROR)
        for code, value in f.parse_settings(payload):
            if code == f.MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif code == f.INITIAL_WINDOW_SIZE:
                if value > 0x7FFFFFFF:
                    raise _ProtocolError("a window too large", f.FLOW_CONTROL_ERROR)
                delta, self.stream_window = value - self.stream_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif code == f.MAX_FRAME_SIZE:
                if not 16384 <= value <= 0xFFFFFF:
                    raise _ProtocolError("a bad MAX_FRAME_SIZE")
                self.max_frame = value
            # HEADER_TABLE_SIZE bounds a table our encoder does not keep; the others
            # (ENABLE_PUSH, MAX_HEADER_LIST_SIZE) ask nothing of a client like us.
        self._write(f.settings_ack())
        if not self.settled.done():
            self.settled.set_result(None)
        self._wake_blocked()
        self._changed()  # perhaps room for more streams

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError("a WINDOW_UPDATE's size", f.FRAME_SIZE_ERROR)
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ProtocolError("a zero WINDOW_UPDATE")
            self.send_window += increment
            self._wake_blocked()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.send_window += increment
            if stream in self.blocked:
                stream.wake()

    def _on_reset(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError("a RST_STREAM's size", f.FRAME_SIZE_ERROR)
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
            raise _ProtocolError("a GOAWAY's size", f.FRAME_SIZE_ERROR)
        last, _ = f.parse_goaway(payload)
        self.draining = True  # streams up to `last` finish; new requests go elsewhere
        for sid in [sid for sid in self.streams if sid > last]:
            stream = self.streams.pop(sid)
            self.blocked.discard(stream)
            stream.fail(_Refused())
        self._changed()

    # -- the streams ---------------------------------------------------------------

    def _end(self, stream: _Stream) -> None:
        self.streams.pop(stream.sid, None)
        self.blocked.discard(stream)
        stream.finish()
        self._changed()

    def _reset(self, stream: _Stream, error: Exception) -> None:
        self.streams.pop(stream.sid, None)
        self.blocked.discard(stream)
        stream.fail(error)
        self._write(f.rst_frame(stream.sid, f.CANCEL))
        self._changed()

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
        self._write(f.goaway_frame(self.next_id - 2 if self.next_id > 1 else 0, code))
        self.draining = True
        self._fail_all(f"the answer is not valid HTTP/2 ({reason})")
        self.close()

    def _wake_blocked(self) -> None:
        for stream in list(self.blocked):
            stream.wake()

    # -- the read timeout: one timer for every stream ------------------------------

    def _arm(self) -> None:
        self.timer = self.loop.call_later(self.read_timeout / _QUIET_CHECKS, self._check_quiet)

    def _check_quiet(self) -> None:
        """Fail the streams whose caller has waited `read_timeout` (up to an eighth more)
        without a frame, or whose sink has (pushed, not paused); a caller not waiting
        (its client is slow) is not timed. Streams left to drain are reset."""
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        stalled = []
        drained = []
        for stream in self.streams.values():
            if stream.draining:
                drained.append(stream)  # its end did not come in one check's time
            elif stream.heard or not (stream.waiter is not None or (
                    stream.sink is not None and not stream.paused)):
                stream.heard = False
                stream.deadline = now + self.read_timeout
            elif now >= stream.deadline:
                stalled.append(stream)
        for stream in stalled:
            self._reset(stream, UpstreamTimeout(_STALLED if stream.started else (
                f"Azure OpenAI did not answer in time ({self.host}).")))
        for stream in drained:
            self.abandon(stream)
        self._arm()
