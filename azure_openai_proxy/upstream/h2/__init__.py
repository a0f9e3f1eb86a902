"""An HTTP/2 `Transport`: many requests multiplexed over a few connections per origin.

What Go's net/http does against Azure (HTTP/2 over TLS, chosen by ALPN): 10,000 relayed
streams then hold 10,000 client sockets and a handful upstream, not 20,000 descriptors
(issue 15). https origins negotiate "h2" by ALPN; one that does not is served by
`FastTransport` (HTTP/1.1) from then on. http:// origins get HTTP/2 "prior knowledge"
(h2c: tests, benchmarks, a sidecar) when this transport is asked for (`upstream.http2:
true`); under the default `auto` they go to `FastTransport` instead (`upstream/auto.py`).

A connection takes streams up to the server's SETTINGS_MAX_CONCURRENT_STREAMS; when
every one is full another is opened (`upstream.pool_size`, when set, bounds them, and a
request then waits up to `pool_timeout` for room). Requests arriving together share the
connection being opened. A stream the server did not process (GOAWAY above its id,
REFUSED_STREAM) is sent once more on another connection: RFC 9113 guarantees it was not
acted on, so even a POST is safe to repeat.

Errors, as `fast/`'s (see `connection.py` for which a stream fails with):

    before sending             UpstreamPoolTimeout (pool_size connections full for pool_timeout)
    before the answer starts   UpstreamUnreachable (refused, DNS, TLS, reset, bad HTTP/2)
                               UpstreamTimeout (connect_timeout; read_timeout to the head)
                               UpstreamHeadTooLarge (past 64 KiB or 128 headers)
    after the head             UpstreamStreamBroken (reset, lost connection)
                               UpstreamTimeout (no frame for read_timeout)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import UpstreamPoolTimeout, UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.dial import dial
from azure_openai_proxy.upstream.fast.dns import DnsCache, Resolver, system_resolver
from azure_openai_proxy.upstream.h2.connection import _H2Connection, _Refused
from azure_openai_proxy.upstream.h2.frames import Origin, header_block, parse_origin
from azure_openai_proxy.upstream.h2.pool import _OriginPool
from azure_openai_proxy.upstream.h2.stream import H2Response, _Stream
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse

__all__ = ["H2Response", "H2Transport"]

_URL_CACHE_SIZE = 256
# Connections a request waits to open before it fails: a request arriving with others
# may see one or two taken by them; more means the server turns streams away.
_OPENINGS = 3
# Connections a request may see opened in all, room on them taken by others first (a
# burst: each new one's room goes to the requests that claimed it): bounded too.
_OPENINGS_SEEN = 12


class H2Transport:
    """HTTP/2 over asyncio Protocols with our own framing (`frames.py`, `connection.py`).
    No upstream proxies (FastTransport, AiohttpTransport serve them). `ssl_contexts` replaces
    `ssl.create_default_context` (tests pass one trusting a self-signed certificate): it
    is called for two contexts, HTTP/2's, given ALPN "h2" and "http/1.1", and the HTTP/1.1
    fallback's, given only "http/1.1" (one context for both would let a later connection
    of the fallback choose h2 and be written HTTP/1.1); `resolver` the system's name
    lookups, as for FastTransport."""

    def __init__(
        self, settings: UpstreamSettings, *,
        ssl_contexts: Callable[[], ssl.SSLContext] = ssl.create_default_context,
        resolver: Resolver = system_resolver,
    ) -> None:
        if settings.http_proxy or settings.socks_proxy:
            raise ValueError("H2Transport does not use upstream proxies; see transport_for")
        self._settings = settings
        self._contexts = ssl_contexts
        self._ssl: ssl.SSLContext | None = None  # built on first https use
        self._resolver = resolver
        self._dns = DnsCache(settings.dns_cache_ttl, resolver)
        self._origins: BoundedCache[str, Origin] = BoundedCache(_URL_CACHE_SIZE)
        self._pools: dict[tuple[str, str, int], _OriginPool] = {}
        self._http1: FastTransport | None = None  # for https origins without h2
        self._sweeper: asyncio.TimerHandle | None = None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        origin = self._origins.get(request.url) or self._origins.put(
            request.url, parse_origin(request.url))
        pool = self._pools.get(origin.key) or self._pool(origin)
        for attempt in range(2):
            conn = (None if pool.waiters or pool.handed else pool.room()) or (
                await self._acquire(pool, origin))
            if conn is None:  # the origin does not speak HTTP/2
                return await self._fallback().send(request)
            try:
                return await self._exchange(conn, request, origin)
            except _Refused:
                if request.mark is not None:  # not acted on (RFC 9113): as if never sent
                    request.mark.sent -= 1
                if attempt:
                    raise UpstreamUnreachable(
                        f"Cannot reach Azure OpenAI at {origin.host}: the server refused the "
                        "request twice (HTTP/2 GOAWAY or REFUSED_STREAM)", request_sent=False
                    ) from None
        raise AssertionError("unreachable")

    def connections_in_use(self) -> int:
        """Requests in flight (streams open), as FastTransport's busy connections."""
        streams = sum(pool.streams() for pool in self._pools.values())
        return streams + (self._http1.connections_in_use() if self._http1 is not None else 0)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.retire(UpstreamUnreachable("The upstream transport was closed.",
                                            request_sent=False))
        if self._http1 is not None:
            await self._http1.close()
        await asyncio.sleep(0)  # let the transports finish closing

    # -- requests ------------------------------------------------------------------

    async def _exchange(self, conn: _H2Connection, request: UpstreamRequest,
                        origin: Origin) -> H2Response:
        body = request.body
        length = len(body) if isinstance(body, bytes) else None
        block = header_block(request, origin, length)
        if isinstance(body, bytes) and body and conn.fits(body):
            stream = conn.open_stream(block, True, body)
            body = None
        else:
            stream = conn.open_stream(block, end_stream=not body)
        mark = request.mark
        if mark is not None:  # its HEADERS written: Azure may act on them
            mark.sent += 1
        stream.bodyless = request.method == "HEAD"
        whole = False
        try:
            if callable(body):
                async for piece in body():
                    await _send(conn, stream, piece)
                    if stream.ended:  # answered (or failed) already: read no more of it
                        break
                conn.end_body(stream)
            elif body:
                await _send(conn, stream, body)
                conn.end_body(stream)
            if mark is not None and stream.sent_end:  # END_STREAM went: the body is whole
                mark.body_sent += 1
                whole = True
            while not stream.started:
                if stream.error is not None:  # (a call fewer a stream: it rarely is)
                    stream.raise_error()
                if stream.ended:  # END_STREAM before any head: not HTTP
                    raise UpstreamUnreachable(
                        f"Cannot reach Azure OpenAI at {origin.host}: the server ended the "
                        "stream without an answer")
                await stream.wait()
        except _Refused:
            conn.abandon(stream)
            if whole and mark is not None:  # not acted on: as if never sent (`send`)
                mark.body_sent -= 1
            raise
        except BaseException:
            conn.abandon(stream)  # reset, unless the server ended it already
            raise
        return H2Response(stream)

    def _fallback(self) -> FastTransport:
        if self._http1 is None:
            context = self._contexts()
            context.set_alpn_protocols(["http/1.1"])
            self._http1 = FastTransport(self._settings, ssl_context=context,
                                        resolver=self._resolver)
        return self._http1

    # -- connections ---------------------------------------------------------------

    def _pool(self, origin: Origin) -> _OriginPool:
        pool = self._pools[origin.key] = _OriginPool(
            asyncio.get_running_loop(), origin.host, self._settings.pool_size)
        if self._sweeper is None:
            self._sweeper = pool.loop.call_later(self._settings.keepalive_timeout, self._sweep)
        return pool

    async def _acquire(self, pool: _OriginPool, origin: Origin) -> _H2Connection | None:
        """A connection with room for a stream (None: the origin speaks only HTTP/1.1):
        the one being opened if it may have room, else a new one; at `pool_size`
        connections, the first to have room within `pool_timeout`. A request waits for
        at most `_OPENINGS` connections to open: a server that takes no stream on a new
        one (SETTINGS_MAX_CONCURRENT_STREAMS 0, a GOAWAY at once) must not have us open
        connection after connection. Requests waiting for room are served in order, a
        newcomer after them."""
        openings = seen = 0
        behind = bool(pool.waiters or pool.handed)
        deadline = 0.0
        while True:
            pool.settle()
            conn = None if behind else pool.room()
            if conn is not None or pool.http1:
                if deadline and pool.waiters and pool.free() > 1:
                    pool.wake(1)  # room for the next in line too
                return conn
            behind = False
            opening = pool.opening
            if opening is None or pool.claims >= pool.expected_room():
                if pool.full():
                    deadline = deadline or pool.loop.time() + self._settings.pool_timeout
                    await self._wait_room(pool, origin, deadline)
                    continue
                opening = pool.open(self._connect(pool, origin))
            openings += 1
            seen += 1
            if openings > _OPENINGS or seen > _OPENINGS_SEEN:
                pool.drop_roomless()  # else every request would open more of them
                raise UpstreamUnreachable(
                    f"Cannot reach Azure OpenAI at {origin.host}: {_OPENINGS} new HTTP/2 "
                    "connections took no stream (the server allows none now)"
                    if openings > _OPENINGS else
                    f"Cannot reach Azure OpenAI at {origin.host}: {_OPENINGS_SEEN} new HTTP/2 "
                    "connections opened and others' requests took their room first",
                    request_sent=False)
            pool.claims += 1
            try:
                opened = await asyncio.shield(opening)
            finally:
                if pool.opening is opening:  # else its claims no longer count
                    pool.claims -= 1
            if opened is not None and opened.max_streams > 0 and not opened.draining:
                # It takes streams: the server allows some, though the requests that
                # claimed it with this one may have taken its room (CI saw a burst of
                # 24 on a 4-stream server refused with "allows none").
                openings -= 1

    async def _wait_room(self, pool: _OriginPool, origin: Origin, deadline: float) -> None:
        try:
            await pool.wait(deadline)
        except TimeoutError:
            raise UpstreamPoolTimeout(
                f"Every HTTP/2 connection to {origin.host} stayed full for "
                f"{self._settings.pool_timeout:g} s (upstream.pool_size is "
                f"{pool.limit}); nothing was sent.") from None

    async def _connect(self, pool: _OriginPool, origin: Origin) -> _H2Connection | None:
        try:
            return await self._handshake(pool, origin)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Azure OpenAI did not accept a connection in time ({origin.host}).",
                request_sent=False,
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable(
                f"Cannot reach Azure OpenAI at {origin.host}: {_reason(exc)}",
                request_sent=False,
            ) from exc

    async def _handshake(self, pool: _OriginPool, origin: Origin) -> _H2Connection | None:
        """A connection whose server's SETTINGS have arrived (its limits known)."""
        context = (self._ssl or self._default_context()) if origin.tls else None
        settings = self._settings
        conn: _H2Connection | None = None
        try:
            async with asyncio.timeout(settings.connect_timeout):
                addresses = await self._dns.addresses(origin.host, origin.port)
                conn = await _open(pool, origin, addresses, context, settings.read_timeout)
                if conn is not None:
                    await conn.settled
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _default_context(self) -> ssl.SSLContext:
        # Built on first https use: loading the system's CA store takes milliseconds.
        context = self._contexts()
        context.set_alpn_protocols(["h2", "http/1.1"])
        self._ssl = context
        return context

    def _sweep(self) -> None:
        """Close connections without a stream for keepalive_timeout; again later."""
        pools = list(self._pools.values())
        if not pools:
            self._sweeper = None
            return
        loop = pools[0].loop
        for pool in pools:
            pool.sweep(loop.time() - self._settings.keepalive_timeout)
        self._sweeper = loop.call_later(self._settings.keepalive_timeout / 2, self._sweep)


async def _send(conn: _H2Connection, stream: _Stream, data: bytes) -> None:
    """Write `data` on `stream` as the windows open; stops early if the stream ended (the
    server answered before the whole body, or failed: its head loop says which). Walked
    by offset: slicing off what was sent copied the rest for every frame (quadratic: a
    25 MB upload copied ~19 GB in 16 KiB frames)."""
    at, size = 0, len(data)
    while at < size and not stream.ended:
        sent = conn.send_data(stream, data, at)
        if sent:
            at += sent
            continue
        conn.blocked.add(stream)
        try:
            await stream.wait()
        finally:
            conn.blocked.discard(stream)


async def _open(
    pool: _OriginPool, origin: Origin, addresses: list[tuple[int, str]],
    context: ssl.SSLContext | None, read_timeout: float,
) -> _H2Connection | None:
    """A connection to the first of `addresses` that accepts (`dial`: Happy Eyeballs);
    None, and the pool marked HTTP/1.1-only, when TLS's ALPN did not choose h2."""

    async def connect(address: str) -> _H2Connection:
        _, conn = await pool.loop.create_connection(
            lambda: _H2Connection(pool.loop, origin.host, read_timeout), address,
            origin.port, ssl=context,
            # Without a fully qualified host's dot, as fast/__init__.py's _open.
            server_hostname=origin.host.rstrip(".") if context is not None else None,
        )
        return conn

    conn = await dial(pool.loop, addresses, connect, _H2Connection.close)
    if context is not None and conn.transport is not None:
        chosen = conn.transport.get_extra_info("ssl_object")
        if chosen is None or chosen.selected_alpn_protocol() != "h2":
            conn.close()
            pool.http1 = True
            return None
    return conn


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.__class__.__name__ == "gaierror":
        return "DNS lookup failed"
    return f"connection failed ({type(exc).__name__})"

