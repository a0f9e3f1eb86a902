"""The one place the gateway talks to Azure. Every upstream byte goes through
`Transport.send`; aiohttp's exceptions are translated here, once, into ours.

A `Transport` is a Protocol so the benchmark can compare clients and a test can plug
in one built from a plain function.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from azure_openai_proxy.errors import (
    UpstreamAnswerTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.framing import (
    INFLATION_MOST,
    Inflater,
    compressed,
    head_refused,
)
from azure_openai_proxy.upstream.proxied import (
    PROXY_ERRORS,
    proxy_failure,
    proxy_name,
    socks_connector,
)

__all__ = [
    "INFLATION_MOST",
    "AiohttpTransport",
    "BodyFactory",
    "Inflater",
    "SentMark",
    "Transport",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamStreamBroken",
    "answer_too_large",
    "compressed",
    "read_limited",
]

# A request body that can be produced again for a retry: bytes, or a function that
# returns a fresh async iterator over the (spooled) body.
BodyFactory = Callable[[], AsyncIterator[bytes]]


class UpstreamStreamBroken(UpstreamUnreachable):
    """The upstream connection failed after the response headers arrived."""

    code = "upstream_stream_broken"


class SentMark(Protocol):
    """What a request's `mark` is (the gateway's request record): `sent` is counted up
    by the transport when the request's first bytes are handed to a socket (its head
    written, or an HTTP/2 stream's HEADERS; bytes buffered by the event loop's transport
    count: Azure may have them), and down when the server says it did not act on them
    (an HTTP/2 REFUSED_STREAM or GOAWAY). `body_sent` likewise when its body's last
    byte is: what Azure acts on and bills (an upload cut short, the connection reset
    mid-way, is neither answered nor billed). A body written in one piece with its head
    (fast's bytes) or none counts with the head, fast's once the loop's write buffer is
    below its high-water mark (a long body: after it drained)."""

    sent: int
    body_sent: int


class UpstreamRequest(NamedTuple):
    """One request to Azure. A NamedTuple, not a frozen dataclass: made on every request,
    and a frozen dataclass costs three times as much to build."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | BodyFactory | None = None
    mark: SentMark | None = None  # told when the request is sent (`SentMark`)


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self, limit: int) -> bytes:
        """The whole body; `UpstreamAnswerTooLarge` as soon as it passes `limit` bytes
        (never a truncated body; the caller's `close()` then drops the connection)."""
        ...

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives; raises `UpstreamStreamBroken` if the connection fails."""
        ...

    def close(self) -> None:
        """Release the connection (to the pool if the body was read, else closed)."""
        ...

    def finish_in_background(self) -> None:
        """Like `close()`, for an answer whose useful part has all been relayed (a
        stream's `[DONE]`) but whose last bytes (the chunked terminator) may still be on
        the way: they are read in the background, for at most `DRAIN_BYTES` and
        `DRAIN_SECONDS`, so the connection goes back to the pool instead of being
        closed. Closing it would cost the next request a new TCP and TLS handshake to
        Azure whenever a client hangs up right after `[DONE]`, as many do."""
        ...


# Bounds on reading the tail of an answer nobody waits for (`finish_in_background`).
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 2.0


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A whole body of at most `limit` bytes; past it, `UpstreamAnswerTooLarge` at once
    (nothing more is read: the connection is not worth the bytes)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise answer_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def answer_too_large(limit: int) -> UpstreamAnswerTooLarge:
    return UpstreamAnswerTooLarge(
        f"Azure OpenAI's answer is larger than the gateway's limit of {limit} bytes."
    )


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    def connections_in_use(self) -> int:
        """Open connections carrying a request or an unread answer right now."""
        ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_draining", "_released", "_response", "_transport")

    def __init__(self, response: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._response = response
        self._transport = transport
        self._draining = False  # finish_in_background took over: close() does nothing
        self._released = False

    def _release(self) -> None:
        """Counted once, whether closed, drained or both."""
        if not self._released:
            self._released = True
            self._transport.in_use -= 1

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self, limit: int) -> bytes:
        length = self._response.content_length
        if length is not None and length > limit:
            raise answer_too_large(limit)
        if length is not None:
            # The common case (a JSON answer with Content-Length): one await, no generator.
            try:
                return await self._response.read()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise _broken() from exc
            except TimeoutError as exc:
                raise _stalled() from exc
        return await read_limited(self.chunks(), limit)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise _broken() from exc
        except TimeoutError as exc:
            raise _stalled() from exc

    def close(self) -> None:
        if not self._draining:
            self._response.release()
            self._release()

    def finish_in_background(self) -> None:
        response = self._response
        if self._draining:
            return
        self._draining = True
        if response.content.is_eof() or response.connection is None:
            response.release()
            self._release()
            return
        task = asyncio.get_running_loop().create_task(_drain(response))
        _DRAINING.add(task)
        task.add_done_callback(_DRAINING.discard)
        task.add_done_callback(lambda _: self._release())


# Drains in flight, referenced so the loop does not lose them.
_DRAINING: set[asyncio.Task[None]] = set()


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the rest of an answer (bounded) so aiohttp can keep the connection."""
    size = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for piece in response.content.iter_any():
                size += len(piece)
                if size > DRAIN_BYTES:
                    break
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    if response.content.is_eof():
        response.release()  # read whole: the connection is kept
    else:
        response.close()


def _connector(settings: UpstreamSettings) -> aiohttp.BaseConnector:
    common = {
        "limit": settings.pool_size,
        "keepalive_timeout": settings.keepalive_timeout,
        "ttl_dns_cache": 300,
    }
    if settings.proxy:  # a SOCKS one (AiohttpTransport takes no HTTP proxy)
        return socks_connector(settings.proxy, **common)
    return aiohttp.TCPConnector(**common)  # type: ignore[arg-type]


class AiohttpTransport:
    """aiohttp's client with one pooled, keep-alive connector per worker, direct or
    through a SOCKS proxy (an HTTP proxy's tunnels are FastTransport's: tunnelled.py)."""

    def __init__(self, settings: UpstreamSettings) -> None:
        if settings.http_tunnel:
            raise ValueError("AiohttpTransport does not use HTTP proxies; use FastTransport")
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        proxy = settings.proxy
        self._proxy = proxy_name(proxy) if proxy else ""  # as our messages name it
        self.in_use = 0  # requests sent or answers not yet closed (aiohttp has no public count)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                # aiohttp's `connect` covers the wait for a free connection too.
                connect=self._settings.pool_timeout + self._settings.connect_timeout,
                sock_connect=self._settings.connect_timeout,
                sock_read=self._settings.read_timeout,
            )
            self._session = aiohttp.ClientSession(
                connector=_connector(self._settings),
                timeout=timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                trust_env=False,
                trace_configs=[_sent_trace()],
            )
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        session = self._open()
        mark = request.mark
        body: Any = request.body
        trace: SentMark | _Bodiless | None = mark
        if mark is None:
            body = body() if callable(body) else body
        elif callable(body):
            body = _counted(body(), mark)
        elif body:
            body = _CountedBytes(body, mark)
        else:  # none: whole with its head
            trace = _Bodiless(mark)
        # Counted from now, as FastTransport counts a connection from its acquisition: a
        # request waiting for Azure's head holds one (http/busypoll.py reads the count).
        self.in_use += 1
        try:
            response = await session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers,
                data=body,
                allow_redirects=False,
                trace_request_ctx=trace,
            )
        except TimeoutError as exc:
            self.in_use -= 1
            raise UpstreamTimeout(
                f"Azure OpenAI did not answer in time ({_host(request.url)}).",
                request_sent=not isinstance(exc, aiohttp.ConnectionTimeoutError),
            ) from exc
        except PROXY_ERRORS as exc:
            self.in_use -= 1
            raise proxy_failure(exc, self._proxy, _host(request.url)) from exc
        except _UNREACHABLE as exc:
            self.in_use -= 1
            raise UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {_host(request.url)}: {_reason(exc)}",
                request_sent=not isinstance(exc, _NOT_SENT),
            ) from exc
        except BaseException:  # cancelled (the client left), or anything else
            self.in_use -= 1
            raise
        refused = head_refused(response.status, response.headers)
        if refused is not None:
            response.close()
            self.in_use -= 1
            try:
                raise refused
            finally:
                del refused  # not kept in this frame: a reference cycle through its traceback
        return _AiohttpResponse(response, self)

    def connections_in_use(self) -> int:
        return self.in_use

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Let the connector's transports finish closing (aiohttp's advice).
            await asyncio.sleep(0)


async def _headers_sent(session: aiohttp.ClientSession, context: SimpleNamespace,
                        params: aiohttp.TraceRequestHeadersSentParams) -> None:
    """aiohttp is writing the request's head (its connection, through the proxy, is
    open): the request's `mark` is told it was sent (`SentMark`)."""
    mark = context.trace_request_ctx
    if isinstance(mark, _Bodiless):  # no body: whole with its head
        mark.mark.sent += 1
        mark.mark.body_sent += 1
    elif mark is not None:
        mark.sent += 1


class _Bodiless(NamedTuple):
    """A request's `mark` for a request without a body: whole once its head is sent."""

    mark: SentMark


async def _counted(pieces: AsyncIterator[bytes], mark: SentMark) -> AsyncIterator[bytes]:
    """`pieces`, and `mark.body_sent` counted once aiohttp asks past the last (it writes
    each piece before it asks for the next, and waits for its buffer to drain past
    64 KiB). A failed write raises in aiohttp, which asks no more: never counted."""
    async for piece in pieces:
        yield piece
    mark.body_sent += 1


class _CountedBytes(aiohttp.BytesPayload):
    """A bytes body whose `mark.body_sent` is counted once aiohttp has written it (its
    head's trace comes before: aiohttp buffers the head and writes both together), as
    a streamed one's (`_counted`). aiohttp writes a payload with `write_with_length`
    (3.12 on; `write` before), then waits for its buffer to drain past 64 KiB; a failed
    write raises there: never counted."""

    def __init__(self, value: bytes, mark: SentMark) -> None:
        super().__init__(value)
        self._mark: SentMark | None = mark

    def _written(self) -> None:
        if self._mark is not None:  # once, whichever of the two aiohttp calls
            self._mark.body_sent += 1
            self._mark = None

    async def write(self, writer: AbstractStreamWriter) -> None:
        await super().write(writer)
        self._written()

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        await super().write_with_length(writer, content_length)
        self._written()


def _sent_trace() -> aiohttp.TraceConfig:
    """aiohttp's only public word of when a request's head is written: its tracing."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    return trace


# What "cannot reach Azure" looks like from aiohttp and the OS (a proxy's failures:
# `proxied.PROXY_ERRORS`).
_UNREACHABLE: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)
# Failures while connecting: no byte of the request left.
_NOT_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,)


def _broken() -> UpstreamStreamBroken:
    return UpstreamStreamBroken(
        "The connection to Azure OpenAI broke while the response was being read."
    )


def _stalled() -> UpstreamTimeout:
    return UpstreamTimeout(
        "Azure OpenAI stopped sending data (read timeout) in the middle of the response."
    )


def _host(url: str) -> str:
    return URL(url, encoded=True).host or "?"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    return type(exc).__name__
