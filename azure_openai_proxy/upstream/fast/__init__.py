"""A lean HTTP/1.1 `Transport`: asyncio Protocols, llhttp (httptools) and a keep-alive pool.

`FastTransport` does `AiohttpTransport`'s job for direct connections (http and https, no
upstream proxy) with far less Python per request: the request head is one string, a body
given as bytes leaves in the same `write`, and llhttp parses the answer straight into a
small queue the caller drains. When the whole answer arrived in one read (the usual JSON
reply), `send` returns with it complete and `read` does not await at all.

Errors, translated here as in `transport.py`:

    before sending             UpstreamPoolTimeout (no free connection in pool_timeout)
    before the answer starts   UpstreamUnreachable (refused, DNS, TLS, reset, not HTTP)
                               UpstreamTimeout (connect_timeout; read_timeout to the head)
                               UpstreamHeadTooLarge (past 64 KiB or 128 headers)
    after the head             UpstreamStreamBroken (reset, truncated body, bad chunking)
                               UpstreamTimeout (no byte for read_timeout)

A pooled connection that the server closed while it sat idle, and that fails before any
byte of the answer, is retried once on a new connection, as aiohttp and httpx do.

A stream's body can be pulled (`chunks()`, each read a wake-up of the awaiting task) or
pushed: `FastResponse.relay(sink)` hands each piece to `sink.feed()` from the
connection's own callback (see `BodySink`), with `pause()`/`resume()` for flow control.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator

from multidict import CIMultiDict

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import UpstreamPoolTimeout, UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast.connection import (
    HIGH_WATER,
    BodySink,
    _Connection,
    _Stale,
)
from azure_openai_proxy.upstream.fast.dial import dial
from azure_openai_proxy.upstream.fast.dns import DnsCache, Resolver, system_resolver
from azure_openai_proxy.upstream.fast.pool import _HostPool
from azure_openai_proxy.upstream.fast.wire import _head, _parse_url, _Target
from azure_openai_proxy.upstream.transport import (
    DRAIN_BYTES,
    DRAIN_SECONDS,
    SentMark,
    UpstreamRequest,
    UpstreamResponse,
    answer_too_large,
    read_limited,
)

__all__ = ["HIGH_WATER", "BodySink", "FastResponse", "FastTransport"]

_URL_CACHE_SIZE = 256
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


class FastResponse:
    """An answer whose head has arrived; the body is drained from the connection
    (`read`, `chunks`) or pushed into a sink (`relay`)."""

    __slots__ = ("_conn", "_owner", "headers", "loop", "status")

    def __init__(self, owner: FastTransport, conn: _Connection) -> None:
        self._owner = owner
        self._conn: _Connection | None = conn
        # Its connection's: asyncio.get_running_loop() costs a getpid() call on 3.11.
        self.loop = conn.loop
        self.status = conn.status
        self.headers: CIMultiDict[str] = conn.headers

    async def read(self, limit: int) -> bytes:
        conn = self._conn
        length = conn.length if conn is not None else None
        if length is not None and length > limit:
            raise answer_too_large(limit)
        if conn is not None and length is not None:
            # The common case (a JSON answer with Content-Length), usually complete by
            # now: the body is wanted whole, so no flow control and no generator.
            conn.greedy = True
            conn.read_on()
            while not conn.complete:
                await conn.wait(self._owner.read_timeout)
            return conn.take()
        return await read_limited(self.chunks(), limit)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        conn = self._conn
        timeout = self._owner.read_timeout
        while conn is not None and self._conn is conn:
            if conn.body:
                yield conn.take()
            elif conn.complete:
                return
            else:
                await conn.wait(timeout)

    def relay(self, sink: BodySink) -> None:
        """Push the body into `sink` as it arrives, from the connection's callbacks (see
        `BodySink`); what arrived already goes first, now. For a stream's relay: no task
        is woken per read. Azure silent for the read timeout fails the sink. `close()`
        or `finish_in_background()` (or `detach()`) stops it."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("relay() after close()")
        conn.push_to(sink, self._owner.read_timeout)

    def detach(self) -> None:
        """Stop pushing into the sink; what follows is queued (as for `chunks()`)."""
        if self._conn is not None:
            self._conn.sink = None

    def pause(self) -> None:
        """Stop reading from Azure (the sink's reader is slow); no read timeout meanwhile."""
        if self._conn is not None:
            self._conn.pause()

    def resume(self) -> None:
        if self._conn is not None:
            self._conn.resume()

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.sink = None
            conn.read_on()  # a pushed answer may have paused it: never pooled paused
            self._owner.release(conn)

    def finish_in_background(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.sink = None
        conn.read_on()  # as in close(): a pushed answer may have paused it at its end
        if conn.complete or conn.error is not None or conn.closed:
            self._owner.release(conn)
        else:
            self._owner.drain(conn)


class FastTransport:
    """HTTP/1.1 over asyncio Protocols with httptools' parser and one keep-alive pool per
    (scheme, host, port). No upstream proxies: `AiohttpTransport` serves those.

    `ssl_context` replaces `ssl.create_default_context()` (tests pass one that trusts a
    self-signed certificate); `resolver` the system's name lookups (they are cached for
    `dns_cache_ttl` seconds, see `dns.py`)."""

    def __init__(
        self, settings: UpstreamSettings, *, ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        if settings.http_proxy or settings.socks_proxy:
            raise ValueError("FastTransport does not use upstream proxies; use AiohttpTransport")
        self.read_timeout = settings.read_timeout
        self._settings = settings
        self._ssl = ssl_context
        self._dns = DnsCache(settings.dns_cache_ttl, resolver)
        self._targets: BoundedCache[str, _Target] = BoundedCache(_URL_CACHE_SIZE)
        self._pools: dict[tuple[str, str, int], _HostPool] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._draining: set[asyncio.Task[None]] = set()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        target = self._targets.get(request.url) or self._remember(request.url)
        pool = self._pools.get(target.key) or self._pool(target)
        head, chunked = _head(request, target)
        # An idle pooled connection, the usual case, without a coroutine to get it.
        conn = pool.take_idle(pool.loop.time(), self._settings.keepalive_timeout) or (
            await self._acquire(pool, target, fresh=False)
        )
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
        if (conn.complete and conn.keep_alive and not conn.body_cut and conn.error is None
                and not conn.closed):
            pool.put(conn)
            if self._sweeper is None and pool.idle:
                self._sweeper = pool.loop.call_later(self._settings.keepalive_timeout, self._sweep)
        else:
            pool.discard(conn)

    def drain(self, conn: _Connection) -> None:
        """Read the rest of `conn`'s answer in the background, then release it."""
        task = conn.loop.create_task(self._drain(conn))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, conn: _Connection) -> None:
        size = 0
        conn.greedy = True
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while True:
                    size += conn.buffered
                    conn.take()
                    if conn.complete or size > DRAIN_BYTES:
                        break
                    await conn.wait(self.read_timeout)
        except asyncio.CancelledError:
            conn.pool.discard(conn)  # the transport is closing
            raise
        except Exception:
            conn.close()
        if not conn.complete:
            conn.close()
        self.release(conn)

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.retire()
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(
                        UpstreamUnreachable("The upstream transport was closed.", request_sent=False)
                    )
        # Let the transports finish closing.
        await asyncio.sleep(0)

    def _remember(self, url: str) -> _Target:
        return self._targets.put(url, _parse_url(url))

    def _pool(self, target: _Target) -> _HostPool:
        loop = asyncio.get_running_loop()
        pool = self._pools[target.key] = _HostPool(loop, target.host, self._settings.pool_size)
        return pool

    async def _acquire(self, pool: _HostPool, target: _Target, fresh: bool) -> _Connection:
        """A connection when no idle one was at hand (`send` looks first): a new one in a
        free slot, or one handed over by a request that finishes. `fresh` (the retry after
        a stale connection): at the pool's limit, the oldest idle one is closed to make
        room rather than reused."""
        if fresh and pool.idle and pool.limit and pool.size >= pool.limit:
            pool.discard(pool.idle.pop(0))  # the oldest idle one makes room for a new one
        if not pool.reserve():
            try:
                handed = await pool.wait(self._settings.pool_timeout)
            except TimeoutError:
                raise UpstreamPoolTimeout(
                    f"Every connection to {target.host} stayed busy for "
                    f"{self._settings.pool_timeout:g} s (upstream.pool_size is "
                    f"{pool.limit}); nothing was sent."
                ) from None
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
                addresses = await self._dns.addresses(target.host, target.port)
                conn = await _open(pool, target, addresses, context)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Azure OpenAI did not accept a connection in time ({target.host}).",
                request_sent=False,
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {target.host}: {_reason(exc)}",
                request_sent=False,
            ) from exc
        pool.every.add(conn)
        return conn

    def _default_context(self) -> ssl.SSLContext:
        # Built on first https use: loading the system's CA store takes milliseconds.
        self._ssl = ssl.create_default_context()
        return self._ssl

    async def _exchange(
        self, conn: _Connection, request: UpstreamRequest, head: bytes, chunked: bool
    ) -> FastResponse:
        conn.start(head_only=request.method == "HEAD")
        transport = conn.transport
        assert transport is not None
        try:
            body = request.body
            if callable(body):
                await self._stream(conn, transport, head, body(), chunked, request.mark)
            else:
                transport.write(head + body if body else head)
                mark = request.mark
                if mark is not None:  # in the socket or the loop's buffer: Azure may have it
                    mark.sent += 1
                    mark.body_sent += 1
            while not conn.started:
                await conn.wait(self.read_timeout)
        except BaseException:
            conn.pool.discard(conn)
            raise
        return FastResponse(self, conn)

    async def _stream(
        self, conn: _Connection, transport: asyncio.Transport, head: bytes,
        pieces: AsyncIterator[bytes], chunked: bool, mark: SentMark | None,
    ) -> None:
        transport.write(head)
        if mark is not None:
            mark.sent += 1
        async for piece in pieces:
            if conn.closed or conn.started or transport.is_closing():
                # Failed, or the upstream answered before taking the whole body (a 413 to
                # an upload): stop sending. The connection cannot be reused (below). (A
                # write that failed, a reset, closes the transport at once and the
                # connection only on the loop's next turn: a body whose pieces never
                # wait was counted whole, and read to its end, into a dead socket.)
                break
            if piece:
                if chunked:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                else:
                    transport.write(piece)
            while conn.write_paused and not conn.closed and not conn.started:
                await conn.wait(self.read_timeout)
        else:
            if not conn.closed and not transport.is_closing():
                if chunked:
                    transport.write(b"0\r\n\r\n")
                if mark is not None:  # its last byte handed over: whole, Azure may act
                    mark.body_sent += 1
            return
        conn.body_cut = True  # the request body was cut short: the connection is spent

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


async def _open(
    pool: _HostPool, target: _Target, addresses: list[tuple[int, str]],
    context: ssl.SSLContext | None,
) -> _Connection:
    """A connection to the first of `addresses` that accepts (`dial`: Happy Eyeballs; TLS
    checked against the host's name, not the address)."""

    async def connect(address: str) -> _Connection:
        _, conn = await pool.loop.create_connection(
            lambda: _Connection(pool), address, target.port, ssl=context,
            # A fully qualified host (`x.openai.azure.com.`) is named without its dot, as
            # aiohttp and Go name it: no certificate names the dotted form.
            server_hostname=target.host.rstrip(".") if context is not None else None,
        )
        return conn

    return await dial(pool.loop, addresses, connect, _Connection.close)


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"connection failed ({type(exc).__name__})"
