"""A lean HTTP/1.1 `Transport`: asyncio Protocols, llhttp (httptools) and a keep-alive pool.

`FastTransport` does `AiohttpTransport`'s job for direct connections (http and https, no
upstream proxy) with far less Python per request: the request head is one string, a body
given as bytes leaves in the same `write`, and llhttp parses the answer straight into a
small queue the caller drains. When the whole answer arrived in one read (the usual JSON
reply), `send` returns with it complete and `read` does not await at all.

Errors, translated here as in `transport.py`:

    before the answer starts   UpstreamUnreachable (refused, DNS, TLS, reset, not HTTP)
                               UpstreamTimeout (connect_timeout; read_timeout to the head)
    after the head             UpstreamStreamBroken (reset, truncated body, bad chunking)
                               UpstreamTimeout (no byte for read_timeout)

A pooled connection that the server closed while it sat idle, and that fails before any
byte of the answer, is retried once on a new connection, as aiohttp and httpx do.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from azure_openai_proxy.errors import HostileInput, UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.transport import UpstreamRequest, UpstreamResponse, UpstreamStreamBroken

__all__ = ["FastTransport"]

# Unread body bytes at which a connection stops reading its socket until the caller
# drains the queue: a slow client of a 50 MB answer holds this much, not 50 MB.
HIGH_WATER = 256 * 1024
_URL_CACHE_SIZE = 256
# A connection idle this long may have been closed by the server's idle timer without the
# loop having seen it yet; its socket is looked at before reuse (a POST is not retried).
_CHECK_IDLE_AFTER = 1.0
_SKIPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
# zlib's window bits for "gzip or zlib header, detected": covers gzip and deflate.
_DECODED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
_AUTO_HEADER = 32 + zlib.MAX_WBITS
_BROKEN = "The connection to Azure OpenAI broke while the response was being read."
_STALLED = "Azure OpenAI stopped sending data (read timeout) in the middle of the response."


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


class _Target(NamedTuple):
    """A URL parsed once: where to connect and the request line's tail with `Host`."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: str  # " /path?query HTTP/1.1\r\nHost: name\r\n"


class _Stale(Exception):
    """A reused connection died before any byte of the answer: worth one retry."""


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UpstreamUnreachable(f"Cannot reach Azure OpenAI: bad URL ({exc})") from exc
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise UpstreamUnreachable("Cannot reach Azure OpenAI: the URL is not http(s)://host/...")
    default = 443 if scheme == "https" else 80
    port = port or default
    netloc = f"[{host}]" if ":" in host else host
    if port != default:
        netloc = f"{netloc}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target((scheme, host, port), host, port, scheme == "https",
                   f" {target} HTTP/1.1\r\nHost: {netloc}\r\n")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. `data_received` feeds llhttp, whose callbacks (`on_*`)
    fill the current exchange: status, headers, a queue of body bytes. The caller waits
    on `wait()`, which returns on any progress and raises the exchange's failure."""

    __slots__ = (
        "body", "buffered", "busy", "closed", "complete", "decoder", "error", "greedy",
        "head_only", "headers", "idle_since", "interim", "keep_alive", "length", "loop",
        "parser", "pool", "raw", "reading_paused", "received", "started", "status",
        "transport", "until_eof", "uses", "waiter", "write_paused",
    )

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.uses = 0
        self.idle_since = 0.0
        self.write_paused = False
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.body: deque[bytes] = deque()
        self.start(head_only=False)
        self.busy = False
        self.uses = 0

    def start(self, head_only: bool) -> None:
        """Begin an exchange: forget the last one's answer."""
        self.busy = True
        self.uses += 1
        self.head_only = head_only
        self.status = 0
        self.raw: list[tuple[str, str]] = []
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.length: int | None = None
        self.received = self.started = self.complete = False
        self.interim = self.until_eof = self.keep_alive = self.greedy = False
        self.error: Exception | None = None
        self.decoder: zlib._Decompress | None = None
        self.body.clear()
        self.buffered = 0

    def quiet(self) -> bool:
        """Whether an idle connection's socket has nothing to read. Something to read
        is the server's FIN (or TLS close_notify), which the loop may not have seen yet:
        a request written now would meet a closed connection."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return True
        try:
            return not _readable(sock.fileno())
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # -- asyncio's callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # A server speaking on an idle connection (a 408, say) ends it.
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # llhttp's errors, or ours from inside its callbacks
            self._fail(self._failure("the answer is not valid HTTP/1.1"), exc)
            self.close()

    def eof_received(self) -> bool:
        if self.until_eof and self.started and not self.complete:
            self._end(keep_alive=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self.pool.lost(self)
        elif not self.complete:
            self._fail(self._failure("the server closed the connection before answering"), exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # -- llhttp's callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self.interim = True
            self.raw = []
            return
        self.status = status
        self.headers = headers = CIMultiDict(self.raw)
        length = headers.get("content-length")
        if headers.get("content-encoding", "").lower() in _DECODED_ENCODINGS:
            # We never send Accept-Encoding; if a server compresses anyway, callers
            # still see identity bytes.
            self.decoder = zlib.decompressobj(_AUTO_HEADER)
            del headers["content-encoding"]
            headers.popall("content-length", None)
        elif length is not None:
            self.length = int(length)
        self.started = True
        if self.head_only:
            self._end(keep_alive=False)
        elif length is None and status not in (204, 304):
            self.until_eof = "chunked" not in headers.get("transfer-encoding", "").lower()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self.decoder is not None:
            body = self.decoder.decompress(body)
        if body:
            self._queue(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif not self.complete:
            self._end(self.parser.should_keep_alive())

    # -- the exchange ----------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.greedy and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def take(self) -> bytes:
        """Every body byte received and not yet taken; reading resumes if it had paused."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        self.read_on()
        return data

    def read_on(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _end(self, keep_alive: bool) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self._queue(tail)
        self.keep_alive = keep_alive
        self.complete = True
        self._wake()

    def _failure(self, reason: str) -> Exception:
        if self.started:
            return UpstreamStreamBroken(_BROKEN)
        if not self.received and self.uses > 1:
            return _Stale()
        return UpstreamUnreachable(f"Cannot reach Azure OpenAI at {self.pool.host}: {reason}")

    def _fail(self, error: Exception, cause: BaseException | None) -> None:
        if self.error is None and not self.complete:
            error.__cause__ = cause
            self.error = error
        self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stall(self) -> None:
        message = _STALLED if self.started else (
            f"Azure OpenAI did not answer in time ({self.pool.host})."
        )
        self._fail(UpstreamTimeout(message), None)

    async def wait(self, timeout: float) -> None:
        """Until something happens (head, body bytes, the end, writable again); raises
        the exchange's failure, or `UpstreamTimeout` after `timeout` s of silence."""
        if self.error is None:
            waiter = self.waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._stall)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None
        if self.error is not None:
            raise self.error


class _HostPool:
    """The connections to one (scheme, host, port). Idle ones wait on a stack (the most
    recently used goes out first: its TCP window is open, the others may expire);
    `size` counts every open or opening one against `limit` (0: none)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, limit: int) -> None:
        self.loop = loop
        self.host = host
        self.limit = limit
        self.size = 0
        self.idle: list[_Connection] = []
        self.every: set[_Connection] = set()
        # Futures of callers over the limit: given a connection, or None for a free slot.
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.retired = False

    def take_idle(self, now: float, keepalive: float) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            age = now - conn.idle_since
            if age <= keepalive and not conn.closed and (age < _CHECK_IDLE_AFTER or conn.quiet()):
                return conn
            self.discard(conn)
        return None

    def reserve(self) -> bool:
        if self.limit and self.size >= self.limit:
            return False
        self.size += 1
        return True

    async def wait(self) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed something just as we were cancelled: pass it on.
                conn = waiter.result()
                if conn is None:
                    self.free_slot()
                else:
                    self.put(conn)
            raise

    def put(self, conn: _Connection) -> None:
        conn.busy = False
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                conn.busy = True
                waiter.set_result(conn)
                return
        if self.retired:
            self.discard(conn)
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        if conn in self.every:
            self.every.discard(conn)
            self.free_slot()

    def free_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to this waiter
                return
        self.size -= 1

    def lost(self, conn: _Connection) -> None:
        """The server closed a connection while it sat idle."""
        if conn in self.idle:
            self.idle.remove(conn)
        self.discard(conn)

    def sweep(self, oldest: float) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            if conn.idle_since >= oldest and not conn.closed:
                self.idle.append(conn)
            else:
                self.discard(conn)

    def retire(self) -> None:
        self.retired = True
        for conn in list(self.every):
            conn.close()
        self.idle.clear()


class _FastResponse:
    """An answer whose head has arrived; the body is drained from the connection."""

    __slots__ = ("_conn", "_owner", "headers", "status")

    def __init__(self, owner: FastTransport, conn: _Connection) -> None:
        self._owner = owner
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.headers: CIMultiDict[str] = conn.headers

    async def read(self, limit: int) -> bytes:
        conn = self._conn
        length = conn.length if conn is not None else None
        if conn is not None and length is not None and length <= limit:
            # The common case (a JSON answer with Content-Length), usually complete by
            # now: the body is wanted whole, so no flow control and no generator.
            conn.greedy = True
            conn.read_on()
            while not conn.complete:
                await conn.wait(self._owner.read_timeout)
            return conn.take()
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            if size < limit:
                parts.append(chunk[: limit - size])
            size += len(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        timeout = self._owner.read_timeout
        while conn is not None and self._conn is conn:
            if conn.body:
                yield conn.take()
            elif conn.complete:
                return
            else:
                await conn.wait(timeout)

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._owner.release(conn)


class FastTransport:
    """HTTP/1.1 over asyncio Protocols with httptools' parser and one keep-alive pool per
    (scheme, host, port). No upstream proxies: `AiohttpTransport` serves those.

    `ssl_context` replaces `ssl.create_default_context()` (tests pass one that trusts a
    self-signed certificate)."""

    def __init__(self, settings: UpstreamSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        if settings.http_proxy or settings.socks_proxy:
            raise ValueError("FastTransport does not use upstream proxies; use AiohttpTransport")
        self.read_timeout = settings.read_timeout
        self._settings = settings
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._pools: dict[tuple[str, str, int], _HostPool] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        target = self._targets.get(request.url) or self._remember(request.url)
        pool = self._pools.get(target.key) or self._pool(target)
        head, chunked = _head(request, target)
        conn = await self._acquire(pool, target, fresh=False)
        try:
            return await self._exchange(conn, request, head, chunked)
        except _Stale as exc:
            # The server closed this reused connection before answering. Most likely it
            # had timed it out while idle, but it may have been processing the request:
            # only an idempotent request is sent again (as aiohttp does); a POST fails
            # over like any other unreachable upstream (a chat call must not run twice).
            if request.method not in _IDEMPOTENT:
                raise UpstreamUnreachable(
                    f"Cannot reach Azure OpenAI at {target.host}: the server closed the "
                    "connection before answering"
                ) from exc
        conn = await self._acquire(pool, target, fresh=True)
        try:
            return await self._exchange(conn, request, head, chunked)
        except _Stale as exc:
            raise UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {target.host}: the server closed the connection"
                " before answering"
            ) from exc

    def connections_in_use(self) -> int:
        """Open connections carrying a request or an unread answer right now."""
        return sum(len(pool.every) - len(pool.idle) for pool in self._pools.values())

    def release(self, conn: _Connection) -> None:
        """Back to the pool if the answer was read whole and keep-alive holds, else closed."""
        pool = conn.pool
        if conn.complete and conn.keep_alive and conn.error is None and not conn.closed:
            pool.put(conn)
            if self._sweeper is None and pool.idle:
                self._sweeper = pool.loop.call_later(self._settings.keepalive_timeout, self._sweep)
        else:
            pool.discard(conn)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.retire()
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(UpstreamUnreachable("The upstream transport was closed."))
        # Let the transports finish closing.
        await asyncio.sleep(0)

    def _remember(self, url: str) -> _Target:
        if len(self._targets) >= _URL_CACHE_SIZE:
            self._targets.clear()
        target = self._targets[url] = _parse_url(url)
        return target

    def _pool(self, target: _Target) -> _HostPool:
        loop = asyncio.get_running_loop()
        pool = self._pools[target.key] = _HostPool(loop, target.host, self._settings.pool_size)
        return pool

    async def _acquire(self, pool: _HostPool, target: _Target, fresh: bool) -> _Connection:
        if not fresh:
            conn = pool.take_idle(pool.loop.time(), self._settings.keepalive_timeout)
            if conn is not None:
                return conn
        elif pool.idle and pool.limit and pool.size >= pool.limit:
            pool.discard(pool.idle.pop(0))  # the oldest idle one makes room for a new one
        if not pool.reserve():
            handed = await pool.wait()
            if handed is not None:
                return handed
        try:
            return await self._connect(pool, target)
        except BaseException:
            pool.free_slot()
            raise

    async def _connect(self, pool: _HostPool, target: _Target) -> _Connection:
        context = (self._ssl or self._default_context()) if target.tls else None
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                _, conn = await pool.loop.create_connection(
                    lambda: _Connection(pool), target.host, target.port, ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Azure OpenAI did not accept a connection in time ({target.host})."
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {target.host}: {_reason(exc)}"
            ) from exc
        pool.every.add(conn)
        return conn

    def _default_context(self) -> ssl.SSLContext:
        # Built on first https use: loading the system's CA store takes milliseconds.
        self._ssl = ssl.create_default_context()
        return self._ssl

    async def _exchange(
        self, conn: _Connection, request: UpstreamRequest, head: bytes, chunked: bool
    ) -> _FastResponse:
        conn.start(head_only=request.method == "HEAD")
        transport = conn.transport
        assert transport is not None
        try:
            body = request.body
            if callable(body):
                await self._stream(conn, transport, head, body(), chunked)
            elif body:
                transport.write(head + body)
            else:
                transport.write(head)
            while not conn.started:
                await conn.wait(self.read_timeout)
        except BaseException:
            conn.pool.discard(conn)
            raise
        return _FastResponse(self, conn)

    async def _stream(
        self, conn: _Connection, transport: asyncio.Transport, head: bytes,
        pieces: AsyncIterator[bytes], chunked: bool,
    ) -> None:
        transport.write(head)
        async for piece in pieces:
            if conn.closed:
                break  # the wait for the head raises the connection's failure
            if piece:
                if chunked:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                else:
                    transport.write(piece)
            while conn.write_paused and not conn.closed:
                await conn.wait(self.read_timeout)
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    def _sweep(self) -> None:
        """Close connections idle longer than keepalive_timeout; again later if any remain."""
        self._sweeper = None
        pools = list(self._pools.values())
        if not pools:
            return
        loop = pools[0].loop
        for pool in pools:
            pool.sweep(loop.time() - self._settings.keepalive_timeout)
        if any(pool.idle for pool in pools):
            self._sweeper = loop.call_later(self._settings.keepalive_timeout / 2, self._sweep)


def _head(request: UpstreamRequest, target: _Target) -> tuple[bytes, bool]:
    """The request head, and whether the body goes chunked (a stream of unknown length)."""
    lines = [request.method, target.head]
    declared: str | None = None
    for name, value in request.headers.items():
        lower = name.lower()
        if lower not in _SKIPPED_HEADERS:
            lines.append(f"{name}: {value}\r\n")
        elif lower == "content-length":
            declared = value
    body = request.body
    chunked = False
    if body is None:
        if request.method not in _BODYLESS_METHODS:
            lines.append("Content-Length: 0\r\n")
    elif not callable(body):
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif declared is not None:
        lines.append(f"Content-Length: {declared}\r\n")
    else:
        lines.append("Transfer-Encoding: chunked\r\n")
        chunked = True
    lines.append("\r\n")
    head = "".join(lines)
    # Each line ends in exactly one CRLF (the target's part holds two lines): a CR or LF
    # inside a name or value would start a header, or a request, of its own.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise HostileInput("A header sent upstream holds a line break.")
    return head.encode(), chunked


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"connection failed ({type(exc).__name__})"
