"""The contract between the HTTP engine and the application it serves.

    engine                                     application
    ------                                     -----------
    HttpRequest (method, target, headers,  ->  await app(request) -> Answer | ResponseStream
                 body, peer)
    request.stream(status, headers)        <-  a streamed answer: its head, then
                                               write(data)... end(tail)
    app.refusal(status, message, code)     <-  the body of an answer the engine gives
                                               itself (malformed HTTP, over a limit)

The application never sees a socket, and the engine never sees the gateway: everything
either side needs of the other is here. A test (tests/unit/test_layout.py) holds the
engine to importing nothing of the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

from multidict import CIMultiDictProxy

__all__ = [
    "Answer",
    "AnsweredByEngine",
    "Application",
    "BodyTimedOut",
    "BodyTooLarge",
    "ClientDisconnected",
    "Headers",
    "HttpRequest",
    "Reply",
    "ResponseStream",
    "WebSocket",
    "WebSocketApplication",
    "WebSocketClosed",
    "WebSocketHandler",
    "answered_by_engine",
    "head_line_pairs",
]

# A request's headers: case-insensitive, repeated names kept, read-only.
Headers = CIMultiDictProxy[str]


class ClientDisconnected(ConnectionResetError):
    """The client closed the connection (or it became unusable) before the exchange ended."""


class BodyTimedOut(Exception):
    """The request body stalled past the engine's body timeout."""


class BodyTooLarge(Exception):
    """The request body is longer than the limit the reader asked for."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")
        self.limit = limit


class AnsweredByEngine:
    """Why the engine cancelled a handler, when not because the client left: the engine
    answered the request itself (its body malformed or late: 400, 408) with `status`. The
    message of that cancellation (`answered_by_engine` reads it)."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


def answered_by_engine(cancelled: BaseException) -> int | None:
    """The status the client got from the engine, when `cancelled` (a handler's
    CancelledError) came from the engine answering the request itself; None when the
    client left."""
    reason = cancelled.args[0] if cancelled.args else None
    return reason.status if isinstance(reason, AnsweredByEngine) else None


class Answer:
    """A whole answer: status, headers and body, written in one go. `headers` has one
    spelling per name; framing headers (content-length, transfer-encoding, connection)
    in it are ignored: the engine writes its own. `head_lines`: more headers, already
    the lines of a head (`name: value\r\n` each, ASCII, no framing header), that the
    engine writes after `headers` as they are, unchecked: only for text the application
    made itself from its own numbers (a virtual key's `x-ratelimit-*`), never a client's
    or an upstream's."""

    __slots__ = ("body", "head_lines", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.head_lines = b""


def head_line_pairs(lines: bytes) -> list[tuple[str, str]]:
    """`Answer.head_lines` as (name, value) pairs."""
    return [(name, value) for name, _, value in (
        line.partition(": ") for line in lines.decode("latin-1").split("\r\n") if line)]


class ResponseStream(Protocol):
    """A streamed answer whose head has been given (`HttpRequest.stream`). The head
    leaves with the first bytes written in the same turn of the event loop, or alone at
    its end, so it is never held back."""

    @property
    def status(self) -> int: ...

    async def write(self, data: bytes) -> None:
        """Send `data` now; waits while the client is not reading. Raises
        `ClientDisconnected` once the client has left."""
        ...

    async def end(self, tail: bytes = b"") -> None:
        """Send `tail` and end the answer (in one write)."""
        ...


Reply = Answer | ResponseStream


class HttpRequest(Protocol):
    """One request, as the engine parsed it. The body arrives as the client sends it."""

    method: str
    target: str  # the request target as sent, e.g. "/v1/chat/completions?x=1"
    headers: Headers
    content_length: int | None  # None when chunked or absent
    # Added by the application to whatever answer goes out (e.g. CORS headers).
    extra_headers: dict[str, str] | None

    @property
    def path(self) -> str:
        """The target's path, percent-encoding kept."""
        ...

    @property
    def query_string(self) -> str:
        """The target's query, without the `?`; "" when there is none."""
        ...

    @property
    def has_body(self) -> bool:
        """Whether a body was announced (Content-Length > 0 or chunked)."""
        ...

    @property
    def peer(self) -> str | None:
        """The client's address."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` past `limit` bytes."""
        ...

    def body_chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive (for large uploads)."""
        ...

    def stream(self, status: int, headers: Mapping[str, str]) -> ResponseStream:
        """Start a streamed answer (chunked, or to the end of the connection for an
        HTTP/1.0 client); the handler then returns the stream."""
        ...


class Application(Protocol):
    """What the engine serves: one callable for every request, plus its life cycle."""

    def __call__(self, request: HttpRequest) -> Awaitable[Reply]:
        """Answer `request`. Errors are the application's to render: an exception that
        escapes is answered with a 500 (logged, never shown)."""
        ...

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        """The answer for a request the engine refuses itself (400 malformed, 408, 413,
        414, 431, 501, 503 over the connection cap...)."""
        ...

    async def startup(self) -> None: ...

    async def shutdown(self) -> None:
        """The engine stopped accepting: in-flight requests still run."""
        ...

    async def cleanup(self) -> None:
        """Every connection is closed."""
        ...


# -- WebSocket (the Realtime API) ----------------------------------------------------------


class WebSocketClosed(Exception):
    """The WebSocket is closed (by either side); `code` and `reason` are the peer's, when
    it said them."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"the WebSocket is closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocket(Protocol):
    """An accepted WebSocket connection, as its handler sees it."""

    @property
    def close_code(self) -> int | None:
        """The close code, once the closing handshake began; else None."""
        ...

    async def receive(self) -> str | bytes:
        """The next whole message: text as `str`, binary as `bytes`. Raises
        `WebSocketClosed` once the connection is closing or closed."""
        ...

    async def send(self, data: str | bytes) -> None:
        """Send a text (`str`) or binary (`bytes`) message; waits while the client is not
        reading. Raises `WebSocketClosed` once the connection is closing or closed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Begin the closing handshake (nothing if it has begun)."""
        ...


# A handler may have a `subprotocols` attribute (a tuple of names): the handshake then
# chooses the first of them the client offers (browsers need one chosen when they offer).
WebSocketHandler = Callable[[WebSocket], Awaitable[None]]


@runtime_checkable
class WebSocketApplication(Protocol):
    """An `Application` that may take WebSocket connections. The engine offers it each
    request with `Upgrade: websocket`; an application without this method declines them
    all (the request is then served as plain HTTP)."""

    def websocket(self, request: HttpRequest) -> Awaitable[WebSocketHandler | None]:
        """A handler to run on the connection once the engine has done the handshake
        (the connection closes when it returns), or None to decline: the request is then
        an ordinary one, given to `__call__`."""
        ...
