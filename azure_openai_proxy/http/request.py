"""What the application sees of a request under `FastServer`: `FastRequest` (the
`HttpRequest` of `interface.py`), a request body that arrives as the client sends it, and
`FastStream`, a streamed answer written through the connection.

The connection (`connection._HttpConnection`) is the only I/O underneath; these classes
talk to it through the small `Channel` protocol, so they are tested with a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from azure_openai_proxy.http.interface import BodyTooLarge, ClientDisconnected, Headers
from azure_openai_proxy.http.wire import BODYLESS_STATUS, response_head

__all__ = ["BODY_HIGH_WATER", "CHUNK_LINES", "CHUNK_LINES_KEPT", "Channel", "FastRequest",
           "FastStream", "RequestBody", "chunk"]

# Unread request-body bytes at which the connection stops reading its socket.
BODY_HIGH_WATER = 256 * 1024
# What a piece of body costs in memory beyond its bytes (a bytes object's header, its
# slot in the deque), counted against `BODY_HIGH_WATER`: a chunked body sent in pieces
# of two bytes held about 20 times its size unread (5.9 MB at the mark).
_PIECE_COST = 64


class Channel(Protocol):
    """What the request, its body and its writer need from the connection."""

    transport: asyncio.Transport | None
    closing: bool
    # Nothing more reaches the client (closed by us, its end came, or lost).
    gone: bool
    write_paused: bool  # the transport's buffer is past its high-water mark
    loop: asyncio.AbstractEventLoop  # the running loop, kept (its lookup is a syscall)

    def date(self) -> str: ...
    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...
    async def drain(self) -> None: ...


class RequestBody:
    """The body of one request, fed by the parser and drained by the handler. Reading
    pauses (the socket is not read) while more than `BODY_HIGH_WATER` bytes wait."""

    __slots__ = ("_channel", "_chunks", "_error", "_waiter", "buffered", "discarded", "done",
                 "expect_continue", "received")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.buffered = 0
        self.received = 0
        self.done = False
        self.discarded = False
        # The client waits for "100 Continue" before sending: sent on the first read.
        self.expect_continue = False

    # -- the connection's side -----------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.discarded:
            self.received += len(data)
            return
        self._chunks.append(data)
        self.buffered += len(data) + _PIECE_COST
        self.received += len(data)
        if self.buffered > BODY_HIGH_WATER:
            self._channel.pause_body()
        if self._waiter is not None:  # (a JSON body comes with its head: nobody waits)
            self._wake()

    def finish(self) -> None:
        self.done = True
        if self._waiter is not None:
            self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._wake()

    def discard(self) -> None:
        """The handler is done without reading it all: what is left is dropped."""
        self.discarded = True
        self._chunks.clear()
        self.buffered = 0

    @property
    def waiting(self) -> bool:
        """A handler is waiting for bytes that have not come."""
        return self._waiter is not None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the handler's side ----------------------------------------------------------

    async def _more(self) -> bool:
        """Wait for bytes or the end; False at the end. Raises if the client left."""
        while not self._chunks:
            if self.done:
                return False
            if self._error is not None:
                raise self._error
            if self.expect_continue:
                self.expect_continue = False
                self._channel.send_continue()
            self._channel.resume_body()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self._channel.resume_body()
        return data

    def whole(self, limit: int = -1) -> bytes | None:
        """The whole body if all of it has arrived (a JSON request usually comes in one
        packet with its head), else None; `BodyTooLarge` past `limit` bytes."""
        if not self.done or self._error is not None:
            return None
        data = self._take() if self._chunks else b""
        if 0 <= limit < len(data):
            raise BodyTooLarge(limit)
        return data

    async def read(self, limit: int = -1) -> bytes:
        """The whole body; `BodyTooLarge` past `limit` bytes (when >= 0)."""
        parts: list[bytes] = []
        size = 0
        while await self._more():
            data = self._take()
            size += len(data)
            if 0 <= limit < size:
                raise BodyTooLarge(limit)
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while await self._more():
            yield self._take()

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """Pieces of at most `n` bytes (spool.py's contract; the last may be shorter)."""
        while await self._more():
            data = self._take()
            for start in range(0, len(data), n):
                yield data[start : start + n]


class FastStream:
    """A streamed answer (`interface.ResponseStream`) on our connection: chunked framing
    for HTTP/1.1, the body to the end of the connection for HTTP/1.0.

    Once its head has left, a chunked stream's bytes take one short path (`framed`):
    the chunk's size line from a table, one write, and whether the client is still there
    read from the connection's `gone` flag (set by `close()`, `eof_received` and
    `connection_lost`) rather than asked of the transport, a call per chunk. A reset
    found by the transport is in that flag a turn of the loop late: `end()` asks the
    transport once, so such an answer is never reported delivered."""

    __slots__ = ("_head", "_head_due", "_on_wire", "bodyless", "channel", "chunked", "ended",
                 "framed", "status", "transport")

    def __init__(self, channel: Channel, transport: asyncio.Transport, status: int,
                 head: bytes, chunked: bool, bodyless: bool) -> None:
        self.channel = channel
        self.transport = transport  # the connection's, which it never replaces
        self.status = status
        self._head = head
        self._head_due = False
        self.chunked = chunked
        self.bodyless = bodyless  # a HEAD request, 204 or 304: the head alone
        self.ended = False
        self._on_wire = False  # the head has been written
        # Chunked, the head written, not ended: a chunk is `chunk(data)` alone, written to
        # `transport` (read with `channel.gone` first and `channel.write_paused` after,
        # as `send()` does, by a caller that cannot afford a call a chunk: the pushed
        # relay's steady frames, gateway/relay.py).
        self.framed = False

    def send_head_soon(self) -> None:
        """The head leaves with the first body bytes if they are written in this turn of
        the loop (a stream's first frames usually arrive with Azure's head), else alone
        at the end of it, so it is never held back. One write instead of two saves a
        wake-up of the client, which on a busy machine can cost the stream's first frame
        a scheduling slice."""
        if self._head and not self._head_due:
            self._head_due = True
            self.channel.loop.call_soon(self._send_head)

    def _send_head(self) -> None:
        if self._head:
            with contextlib.suppress(ClientDisconnected):
                self._send(b"")

    def drop_pending_head(self) -> bool:
        """The handler answered anew after starting this stream: forget the head if it
        has not left yet (then the other answer can be written cleanly); False if bytes
        of this answer are already on the wire."""
        self._head = b""
        return not self._on_wire

    def _send(self, data: bytes) -> None:
        """Write `data` (already framed), after the head if it has not left."""
        if self.channel.gone:
            raise ClientDisconnected("The client closed the connection")
        head = self._head
        if head:
            self._head = b""
            self.transport.write(head + data)
            self._on_wire = True
            self.framed = self.chunked and not self.ended
        elif data:
            self.transport.write(data)

    async def write(self, data: bytes) -> None:
        if self.framed and data:
            if self.channel.gone:
                raise ClientDisconnected("The client closed the connection")
            size = len(data)
            self.transport.write(_JOIN((CHUNK_LINES[size], data, b"\r\n")) if size < CHUNK_LINES_KEPT
                                  else b"%x\r\n%b\r\n" % (size, data))
        else:
            if self.ended:
                raise RuntimeError("write() after end()")
            if not data or self.bodyless:
                return
            self._send(chunk(data) if self.chunked else data)
        if self.channel.write_paused:  # else no coroutine per chunk to learn it
            await self.channel.drain()

    def send(self, data: bytes) -> bool:
        """`write()` without waiting, for a caller that cannot await (a protocol
        callback relaying a stream): False once the client is not reading, after which
        nothing more is sent until `drained()` returns. Raises `ClientDisconnected`
        once the client has left."""
        channel = self.channel
        if self.framed and data:  # the steady case: one call, one write
            if channel.gone:
                raise ClientDisconnected("The client closed the connection")
            size = len(data)  # `chunk()`, inline
            self.transport.write(_JOIN((CHUNK_LINES[size], data, b"\r\n")) if size < CHUNK_LINES_KEPT
                                  else b"%x\r\n%b\r\n" % (size, data))
        else:
            if self.ended:
                raise RuntimeError("send() after end()")
            if data and not self.bodyless:
                self._send(chunk(data) if self.chunked else data)
        return not channel.write_paused

    async def drained(self) -> None:
        """Return once the client reads again (at once if it is not behind)."""
        await self.channel.drain()

    async def end(self, tail: bytes = b"") -> None:
        if self.ended:
            return
        self.ended = True
        self.framed = False
        if self.bodyless:
            tail = b""
        elif self.chunked:
            tail = chunk(tail) + b"0\r\n\r\n" if tail else b"0\r\n\r\n"
        if tail or self._head:
            self._send(tail)
        channel = self.channel
        if channel.write_paused or channel.gone:  # else no coroutine to learn it
            await channel.drain()
        elif self.transport.is_closing():
            # A transport that failed a read or a write (a reset) closes itself and
            # reports the loss a turn of the loop later: until then `gone` is not set
            # and what is written vanishes. A chunk may; the end is not reported as
            # delivered (once per stream, not a call per chunk).
            raise ClientDisconnected("The client closed the connection")


# The size line of every chunk shorter than this (a stream's frames nearly all are),
# made once: an index instead of formatting the size per chunk.
CHUNK_LINES_KEPT = 4096
CHUNK_LINES = tuple(b"%x\r\n" % size for size in range(CHUNK_LINES_KEPT))
_JOIN = b"".join


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (RFC 9112 7.1): its size in hex, CRLF, the data,
    CRLF. Never empty `data`: an empty chunk ends the body."""
    size = len(data)
    if size < CHUNK_LINES_KEPT:
        return _JOIN((CHUNK_LINES[size], data, b"\r\n"))
    return b"%x\r\n%b\r\n" % (size, data)


class FastRequest:
    """One request as the application sees it (`interface.HttpRequest`)."""

    __slots__ = (
        "_channel",
        "_keep_alive",
        "body",
        "content_length",
        "extra_headers",
        "head_lines",
        "headers",
        "http11",
        "method",
        "path",
        "started_stream",
        "target",
        "upgrade_rest",
    )

    def __init__(
        self, channel: Channel, method: str, target: str, headers: Headers, http11: bool,
        keep_alive: bool, content_length: int | None, body: RequestBody | None,
    ) -> None:
        self._channel = channel
        self.method = method
        self.target = target
        # Read three times a request or more (the app's routes, the pipeline's cache):
        # an attribute, not a property that partitions the target at each read.
        self.path = target.partition("?")[0]
        self.headers = headers
        self.http11 = http11
        self._keep_alive = keep_alive
        self.content_length = content_length
        self.body = body
        self.extra_headers: dict[str, str] | None = None
        # More lines for a streamed answer's head, as `Answer.head_lines` are for a whole
        # answer's (the application's own text: a virtual key's `x-ratelimit-*`), set
        # before `stream()`.
        self.head_lines = b""
        # The streamed answer once `stream()` began it (read by the engine per request:
        # an attribute, not a property).
        self.started_stream: FastStream | None = None
        # Set for a WebSocket upgrade the application may take: what the client sent
        # after the head, held until it decides (a bytearray once reads are added to it).
        self.upgrade_rest: bytes | bytearray | None = None

    @property
    def keep_alive(self) -> bool:
        """The client allows it and the server is not shutting down."""
        return self._keep_alive and not self._channel.closing

    @property
    def query_string(self) -> str:
        return self.target.partition("?")[2]

    @property
    def has_body(self) -> bool:
        return self.body is not None

    @property
    def peer(self) -> str | None:
        transport = self._channel.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, (list, tuple)) and peer else None

    async def read(self, limit: int) -> bytes:
        body = self.body
        if body is None:
            return b""
        data = body.whole(limit)  # without waiting, when it is all here
        if data is not None:
            return data
        length = self.content_length
        if length is not None and 0 <= limit < length:
            # Announced over the limit: refused before "100 Continue" (which the first
            # read sends) invites a body that would be refused.
            raise BodyTooLarge(limit)
        return await body.read(limit)

    def body_chunks(self) -> AsyncIterator[bytes]:
        if self.body is None:
            return _no_chunks()
        return self.body.iter_any()

    def stream(self, status: int, headers: Mapping[str, str], soon: bool = True) -> FastStream:
        """`interface.HttpRequest.stream`; `soon=False` for a caller that writes the
        first bytes, or else calls `send_head_soon()`, in this turn of the loop (no
        callback of the loop to send a head that has already left)."""
        if self.started_stream is not None:
            raise RuntimeError("the answer has already started")
        keep_alive = self._keep_alive and self.http11 and not self._channel.closing
        extra = self.extra_headers
        pairs = [*headers.items(), *extra.items()] if extra else headers.items()
        bodyless = self.method == "HEAD" or status < 200 or status in BODYLESS_STATUS
        chunked = self.http11 and not bodyless
        transport = self._channel.transport
        if transport is None:
            raise ClientDisconnected("The client closed the connection")
        head = response_head(status, pairs, None, keep_alive, self._channel.date(),
                             chunked=chunked, head_lines=self.head_lines)
        stream = self.started_stream = FastStream(self._channel, transport, status, head,
                                                  chunked, bodyless)
        if soon:
            stream.send_head_soon()
        return stream

    def __repr__(self) -> str:
        return f"<FastRequest {self.method} {self.target}>"


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing
