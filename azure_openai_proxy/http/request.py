"""What a handler sees under `FastServer`: the slice of aiohttp's `web.Request` the gateway
uses, a request body that arrives as the client sends it, and the payload writer that lets
aiohttp's own `web.StreamResponse.prepare()` write through our connection.

    FastRequest      method, path, rel_url, query, headers, content_length, can_read_body,
                     read(), content (RequestBody), app, match_info, version, keep_alive,
                     transport, remote, item get/set (`request[RECORD]`)
    RequestBody      read(), iter_chunked(n), iter_any(): the StreamReader calls spool.py makes
    PayloadWriter    write_headers/send_headers/write/write_eof/drain, what
                     `StreamResponse._start` and `write` call on `request._payload_writer`

The connection (`fastserver._HttpConnection`) is the only I/O underneath; these classes
talk to it through the small `Channel` protocol, so they are tested with a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http import HttpVersion
from multidict import CIMultiDictProxy, MultiDictProxy
from yarl import URL

__all__ = ["Channel", "FastRequest", "PayloadWriter", "RequestBody"]

# Unread request-body bytes at which the connection stops reading its socket.
BODY_HIGH_WATER = 256 * 1024
_URL_CACHE_SIZE = 1024


class Channel(Protocol):
    """What the request, its body and its writer need from the connection."""

    transport: asyncio.Transport | None
    closing: bool

    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...
    async def drain(self) -> None: ...


class ClientLeft(ConnectionResetError):
    """The client closed the connection before its request body arrived whole."""


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
        self.buffered += len(data)
        self.received += len(data)
        if self.buffered > BODY_HIGH_WATER:
            self._channel.pause_body()
        self._wake()

    def finish(self) -> None:
        self.done = True
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
        packet with its head), else None; past `limit` bytes aiohttp's 413 exception."""
        if not self.done or self._error is not None:
            return None
        data = self._take() if self._chunks else b""
        if 0 <= limit < len(data):
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        return data

    async def read(self, limit: int = -1) -> bytes:
        """The whole body; past `limit` bytes (when >= 0) aiohttp's 413 exception."""
        parts: list[bytes] = []
        size = 0
        while await self._more():
            data = self._take()
            size += len(data)
            if 0 <= limit < size:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
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


class PayloadWriter:
    """aiohttp's `AbstractStreamWriter`, as much as `StreamResponse` uses, over our
    connection: the head is written when `send_headers` is called (a stream's first
    frame is never held back), chunked framing when the response asked for it."""

    __slots__ = ("_channel", "_head", "_head_due", "buffer_size", "chunked", "eof", "length",
                 "output_size")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._head = b""
        self._head_due = False
        self.chunked = False
        self.eof = False
        self.length: int | None = None
        self.output_size = 0
        self.buffer_size = 0

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._channel.transport

    def enable_chunking(self) -> None:
        self.chunked = True

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise RuntimeError("FastServer does not compress responses")

    async def write_headers(self, status_line: str, headers: Mapping[str, str]) -> None:
        lines = [status_line, *(f"{name}: {value}" for name, value in headers.items())]
        head = "\r\n".join(lines) + "\r\n\r\n"
        if "\n" in status_line or head.count("\n") != len(lines) + 1:
            raise ValueError("Newline or carriage return detected in headers")
        self._head = head.encode("latin-1")

    def send_headers(self) -> None:
        """Called by `prepare()`: the head leaves with the first body bytes if they are
        written in this turn of the loop (a stream's first frames usually arrive with
        Azure's head), else alone at the end of it, so it is never held back. One write
        instead of two saves a wake-up of the client, which on a busy machine can cost
        the stream's first frame a scheduling slice."""
        if self._head and not self._head_due:
            self._head_due = True
            asyncio.get_running_loop().call_soon(self._send_head)

    def _send_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            with contextlib.suppress(ClientLeft):
                self._send(head)

    def drop_pending_head(self) -> bool:
        """The handler answered with another response after preparing this one: forget
        the head if it has not left yet (then the other response can be written
        cleanly); False if bytes of this response are already on the wire."""
        self._head = b""
        return self.output_size == 0

    def _with_head(self, data: bytes) -> bytes:
        head = self._head
        if not head:
            return data
        self._head = b""
        return head + data

    def _send(self, data: bytes) -> None:
        transport = self._channel.transport
        if transport is None or transport.is_closing():
            raise ClientLeft("Cannot write to closing transport")
        self.output_size += len(data)
        transport.write(data)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk:
            self.send_headers()
            return
        data = bytes(chunk)
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._send(self._with_head(data))
        await self._channel.drain()

    async def write_eof(self, chunk: bytes = b"") -> None:
        if self.eof:
            return
        if self.chunked:
            tail = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(chunk), chunk)) if chunk else b"0\r\n\r\n"
        else:
            tail = bytes(chunk)
        data = self._with_head(tail)
        if data:
            self._send(data)
        self.eof = True
        await self._channel.drain()

    async def drain(self) -> None:
        await self._channel.drain()


def _parse_target(raw_target: str) -> URL:
    """The request target as aiohttp's parser reads it: an origin-form target is a path
    (never `//host/...` taken as an authority), an absolute-form one its relative part."""
    try:
        if raw_target.startswith("/"):
            path, _, fragment = raw_target.partition("#")
            path, _, query = path.partition("?")
            return URL.build(path=path, query_string=query, fragment=fragment, encoded=True)
        return URL(raw_target, encoded=True).relative()
    except ValueError:
        return URL.build(path="/", encoded=True)


class FastRequest(dict[Any, Any]):
    """One request as the gateway's handlers see it (a dict for `request[RECORD]`)."""

    __slots__ = (
        "_channel", "_keep_alive", "_query", "_url", "_urls", "_writer", "app", "body",
        "content_length", "headers", "match_info", "method", "raw_target", "version",
    )

    def __init__(
        self, channel: Channel, app: web.Application, method: str, raw_target: str,
        headers: CIMultiDictProxy[str], version: HttpVersion, keep_alive: bool,
        content_length: int | None, body: RequestBody | None, urls: dict[str, URL],
    ) -> None:
        self._channel = channel
        self.app = app
        self.method = method
        self.raw_target = raw_target
        self.headers = headers
        self.version = version
        self._keep_alive = keep_alive
        self.content_length = content_length
        self.body = body
        self.match_info: Any = None
        self._url: URL | None = None
        self._urls = urls
        self._query: MultiDictProxy[str] | None = None
        self._writer: PayloadWriter | None = None

    @property
    def _payload_writer(self) -> PayloadWriter:
        """Made on first use: a plain `web.Response` is written without one."""
        if self._writer is None:
            self._writer = PayloadWriter(self._channel)
        return self._writer

    @property
    def rel_url(self) -> URL:
        url = self._url
        if url is None:
            # Parsed once per distinct target: a few paths carry nearly all the traffic,
            # and a yarl URL (with its parsed query) is immutable, so it can be shared.
            url = self._urls.get(self.raw_target)
            if url is None:
                url = _parse_target(self.raw_target)
                if len(self._urls) >= _URL_CACHE_SIZE:
                    self._urls.clear()
                self._urls[self.raw_target] = url
            self._url = url
        return url

    @property
    def keep_alive(self) -> bool:
        """The client allows it and the server is not shutting down."""
        return self._keep_alive and not self._channel.closing

    @property
    def path(self) -> str:
        return self.rel_url.path

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = self.rel_url.query
        return self._query

    @property
    def can_read_body(self) -> bool:
        return self.body is not None and not (self.body.done and not self.body.buffered)

    @property
    def body_exists(self) -> bool:
        return self.body is not None

    @property
    def content(self) -> RequestBody:
        if self.body is None:
            self.body = RequestBody(self._channel)
            self.body.done = True
        return self.body

    async def read(self) -> bytes:
        body = self.body
        if body is None:
            return b""
        data = body.whole(self.app._client_max_size)  # without waiting, when it is all here
        return data if data is not None else await body.read(self.app._client_max_size)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._channel.transport

    @property
    def remote(self) -> str | None:
        transport = self._channel.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, (list, tuple)) and peer else None

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        signal = self.app.on_response_prepare
        if signal:
            await signal.send(self, response)  # type: ignore[arg-type]

    def __repr__(self) -> str:  # a dict's repr would show our items only
        return f"<FastRequest {self.method} {self.raw_target}>"
