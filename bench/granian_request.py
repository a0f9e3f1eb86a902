"""The gateway's HTTP interface (`azure_openai_proxy/http/interface.py`) over granian's
RSGI: `GranianRequest` is an `HttpRequest` made of RSGI's scope and protocol,
`GranianStream` a `ResponseStream` written through RSGI's stream transport, and
`answer(app, scope, proto)` serves one request with any `Application`.

A benchmark candidate, not a second engine of the gateway: it lives in `bench/` so the
engine decision can be measured on the full request path (see bench/README.md, "HTTP
engine: FastServer vs granian"). What RSGI cannot give, and so this adapter does not do,
is listed there; in short:

- the request target arrives percent-*decoded* (`scope.path`): it is re-encoded here so
  that it parses as a target again, but `%2F` and `/` can no longer be told apart;
- granian answers malformed HTTP (400), over-long heads (431) itself with an empty body:
  `Application.refusal` is only used for what the adapter sees (413, 408, 500);
- a stream's `write` never waits for a slow client: granian buffers without a bound;
- a client that leaves is seen through `proto.client_disconnect()` (the handler is
  cancelled, as under FastServer); an answer cannot be aborted once its head has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from granian.rsgi import Scope
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.http.interface import (
    Answer,
    Application,
    BodyTimedOut,
    BodyTooLarge,
    ClientDisconnected,
    Headers,
    head_line_pairs,
)

__all__ = ["BodyLimits", "GranianRequest", "GranianStream", "HTTPProtocol", "answer"]

log = logging.getLogger("azure_openai_proxy")

# The engine writes its own framing; an application's copy would contradict it (granian
# sends whatever content-length it is given, whatever the body's length).
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
# RFC 3986 pchar plus "/": what may stay as it is in a path.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
# A body announced up to this size is read whole in one call; larger or chunked ones
# piece by piece, so the stall timeout applies to each piece rather than to the whole.
_WHOLE_READ = 256 * 1024
_STALLED = -1.0  # a read's deadline once the sweep has found it stalled
_T = TypeVar("_T")


class BodyLimits:
    """How long the adapter waits for the next piece of a request body (FastServer's
    `request_timeout`: a stalled body is answered 408). One per worker: reads in progress
    are checked by one sweep every second (no timer per read, which cost more than the
    rest of the adapter's work for a request), and the sweep stops when none are."""

    __slots__ = ("_reads", "_sweeper", "stall_seconds", "sweep_seconds")

    def __init__(self, stall_seconds: float = 60.0) -> None:
        self.stall_seconds = stall_seconds
        self.sweep_seconds = min(1.0, stall_seconds / 2)
        self._reads: dict[asyncio.Task[Any], float] = {}  # reading task -> deadline
        self._sweeper: asyncio.TimerHandle | None = None

    async def timed(self, read: Awaitable[_T]) -> _T:
        """`await read`, or `BodyTimedOut` once it has waited `stall_seconds`."""
        task = asyncio.current_task()
        if task is None:
            return await read
        loop = asyncio.get_running_loop()
        self._reads[task] = loop.time() + self.stall_seconds
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.sweep_seconds, self._sweep, loop)
        try:
            return await read
        except asyncio.CancelledError:
            if self._reads.get(task) == _STALLED:
                task.uncancel()  # the sweep's own cancellation, turned into an answer
                raise BodyTimedOut() from None
            raise
        finally:
            self._reads.pop(task, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._reads.items()):
            if deadline != _STALLED and deadline <= now:
                self._reads[task] = _STALLED
                task.cancel()
        self._sweeper = loop.call_later(self.sweep_seconds, self._sweep, loop) if self._reads else None


class _StreamTransport(Protocol):
    """What `HTTPProtocol.response_stream` returns."""

    async def send_bytes(self, data: bytes) -> None: ...


class HTTPProtocol(Protocol):
    """The part of granian's RSGI protocol object the adapter uses (granian's module
    does not export its type). Once the client has left, granian raises its
    `ProtocolClosed`, a `RuntimeError`."""

    def __call__(self) -> Awaitable[bytes]: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def client_disconnect(self) -> Any: ...  # a future, resolved when the client leaves
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...
    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _StreamTransport: ...


def _pairs(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in _FRAMING]


class GranianStream:
    """A streamed answer (`interface.ResponseStream`). As under FastServer, the head is
    held until the first write or the end of the current loop turn, whichever comes
    first, so an answer given instead of the stream before anything left can still go
    out cleanly."""

    __slots__ = ("_head", "_proto", "_transport", "ended", "status")

    def __init__(self, proto: HTTPProtocol, status: int, head: list[tuple[str, str]]) -> None:
        self._proto = proto
        self._head: list[tuple[str, str]] | None = head
        self._transport: _StreamTransport | None = None
        self.status = status
        self.ended = False
        asyncio.get_running_loop().call_soon(self._open)

    def drop_pending_head(self) -> bool:
        """Forget the head if it has not left; False if it has."""
        self._head = None
        return self._transport is None

    def _open(self) -> None:
        head = self._head
        if head is not None and self._transport is None:
            self._head = None
            self._transport = self._proto.response_stream(self.status, head)

    async def _send(self, data: bytes) -> None:
        self._open()
        transport = self._transport
        if transport is None:  # the head was dropped: this answer was replaced
            raise RuntimeError("write() on a stream whose answer was replaced")
        try:
            await transport.send_bytes(data)
        except RuntimeError:  # granian's ProtocolClosed
            raise ClientDisconnected("The client closed the connection") from None

    async def write(self, data: bytes) -> None:
        if self.ended:
            raise RuntimeError("write() after end()")
        if data:
            await self._send(data)

    async def end(self, tail: bytes = b"") -> None:
        """Send `tail`; the answer itself ends when the handler returns (RSGI has no
        call for it)."""
        if self.ended:
            return
        self.ended = True
        if tail:
            await self._send(tail)
        else:
            self._open()


class GranianRequest:
    """One request as the application sees it (`interface.HttpRequest`)."""

    __slots__ = ("_limits", "_proto", "_query", "_scope", "_stream", "content_length",
                 "extra_headers", "headers", "method", "path", "target")

    def __init__(self, scope: Scope, proto: HTTPProtocol, limits: BodyLimits) -> None:
        self._scope = scope
        self._proto = proto
        self._limits = limits
        self.method = scope.method
        # granian gives the path decoded: encode it again so that it reads as a target
        # (a decoded "?" or "#" would otherwise end the path early).
        self.path = quote(scope.path, safe=_PATH_SAFE)
        self._query = scope.query_string
        self.target = f"{self.path}?{self._query}" if self._query else self.path
        self.headers: Headers = CIMultiDictProxy(CIMultiDict(scope.headers.items()))
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None else None
        self.extra_headers: dict[str, str] | None = None
        self._stream: GranianStream | None = None

    @property
    def query_string(self) -> str:
        return self._query

    @property
    def has_body(self) -> bool:
        if self.content_length is not None:
            return self.content_length > 0
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def peer(self) -> str | None:
        client = self._scope.client  # "host:port", "[v6]:port"; "" on a Unix socket
        host = client.rpartition(":")[0].strip("[]")
        return host or None

    @property
    def started_stream(self) -> GranianStream | None:
        return self._stream

    async def read(self, limit: int) -> bytes:
        length = self.content_length
        if length is not None:
            if length > limit:
                raise BodyTooLarge(limit)
            if length == 0:
                return b""
            if length <= _WHOLE_READ:
                # hyper holds the body to its announced length: one call reads it all.
                return await self._limits.timed(self._proto())
        elif not self.has_body:
            return b""
        parts: list[bytes] = []
        size = 0
        async for piece in self._pieces():
            size += len(piece)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def body_chunks(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        if not self.has_body:
            return
        pieces = aiter(self._proto)
        timed = self._limits.timed
        while True:
            try:
                piece = await timed(anext(pieces))
            except StopAsyncIteration:
                return
            if piece:
                yield piece

    def stream(self, status: int, headers: Mapping[str, str]) -> GranianStream:
        if self._stream is not None:
            raise RuntimeError("the answer has already started")
        extra = self.extra_headers
        head = _pairs([*headers.items(), *extra.items()] if extra else headers.items())
        self._stream = GranianStream(self._proto, status, head)
        return self._stream

    def respond(self, reply: Answer) -> None:
        """Hand a whole answer to granian (it writes the framing and the date)."""
        extra = self.extra_headers
        pairs = _pairs([*reply.headers.items(), *head_line_pairs(reply.head_lines),
                        *(extra.items() if extra else ())])
        with contextlib.suppress(RuntimeError):  # granian's ProtocolClosed: the client left
            self._proto.response_bytes(reply.status, pairs, reply.body)

    def __repr__(self) -> str:
        return f"<GranianRequest {self.method} {self.target}>"


async def answer(app: Application, scope: Scope, proto: HTTPProtocol, limits: BodyLimits) -> None:
    """Serve one RSGI request with `app`: run its handler (cancelled if the client
    leaves), then hand its answer to granian."""
    request = GranianRequest(scope, proto, limits)
    task = asyncio.current_task()
    # A future granian resolves when the client leaves (ensure_future hands it back as
    # it is; granian's stub calls it a coroutine).
    gone = asyncio.ensure_future(proto.client_disconnect())

    def _left(_: object) -> None:
        if task is not None:
            task.cancel()

    gone.add_done_callback(_left)
    try:
        reply = await app(request)
    except asyncio.CancelledError:
        if gone.done():
            return  # the client left: nobody to answer (the handler has stopped)
        raise
    except ConnectionError:  # ClientDisconnected too: the client left mid-answer
        return
    except BodyTooLarge as exc:
        reply = app.refusal(413, str(exc))
    except BodyTimedOut:
        reply = app.refusal(408, "The request body was not received in time.", "timeout")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        reply = app.refusal(500, "The gateway hit an unexpected error.", "internal_error")
    finally:
        gone.remove_done_callback(_left)
    stream = request.started_stream
    if stream is not None and reply is stream:
        await stream.end()  # a handler that returned without ending it
        return
    if stream is not None and not stream.drop_pending_head():
        # A head has left and the handler answered anew: RSGI cannot abort the
        # connection, so the stream just ends (FastServer closes it instead).
        log.error("%s %s answered anew after its stream started", request.method, request.path)
        return
    if not isinstance(reply, Answer):
        log.error("the handler for %s %s returned %r, not an answer", request.method,
                  request.path, type(reply).__name__)
        reply = app.refusal(500, "The gateway hit an unexpected error.", "internal_error")
    request.respond(reply)
