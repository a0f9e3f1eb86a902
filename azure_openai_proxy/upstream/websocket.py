"""WebSocket connections to Azure (the Realtime API), with `websockets`' asyncio client.

`open_socket(url, headers, settings)` does the handshake, through the configured upstream
proxy when there is one (HTTP CONNECT in tunnel.py, SOCKS through python-socks, which
`websockets` calls; the environment's proxy variables are never read: settings are a
value).
Its failures are ours, translated here once:

    UpstreamRefused          Azure answered the handshake with an HTTP error (401, 404,
                             429...): status, headers and body, for the gateway to translate
    UpstreamError            Azure answered with another status (a redirect, never
                             followed: it would take the key elsewhere)
    UpstreamUnreachable      no connection (refused, DNS, TLS, proxy: a proxy's doing is
                             told as for aiohttp's client, naming it, proxied.py's words;
                             an HTTP proxy's tunnel is tunnel.py's). Azure's addresses
                             that failed are named, the most telling failure first (a
                             refusal before a missing route), also when connect_timeout
                             ended the race on another's silence
    UpstreamTimeout          no handshake within `connect_timeout` (no address said more)
    UpstreamSocketClosed     the open connection ended: `code`/`reason` as Azure said them,
                             `dropped` when Azure sent no close frame (a drop, or a
                             protocol failure the library closed on)

Messages are handed on as they arrive: `websockets` keeps at most `_MAX_QUEUE` unread
messages and then stops reading the socket, so a slow reader slows Azure's side too.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import python_socks
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    ProxyError,
    WebSocketException,
)
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from azure_openai_proxy import __version__
from azure_openai_proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast.dial import dial
from azure_openai_proxy.upstream.fast.dns import Resolver, system_resolver
from azure_openai_proxy.upstream.proxied import (
    proxy_name,
    proxy_refused,
    proxy_said,
    proxy_unreachable,
    with_password,
)
from azure_openai_proxy.upstream.tunnel import open_tunnel

__all__ = ["UpstreamRefused", "UpstreamSocket", "UpstreamSocketClosed", "open_socket"]

_MAX_MESSAGE = 16 * 1024 * 1024
_MAX_QUEUE = 16
_CLOSE_TIMEOUT = 2.0
_USER_AGENT = f"azure-openai-proxy/{__version__}"
# Codes a close frame may not carry (RFC 6455 7.4.1): they only describe what happened.
_UNSENDABLE = frozenset({CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE,
                         CloseCode.TLS_HANDSHAKE})
# How telling an address's failure is, most first: a refusal says the host is there but
# nothing listens; no route for an address's family (IPv6 on a host without it) says
# least, less than connect_timeout running out on another address (`_TIMED_OUT`).
_REFUSED, _OTHER, _TIMED_OUT, _NO_ROUTE_FOR_IT = range(4)
_NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
_MOST_TOLD = 3  # addresses named in a message


class UpstreamRefused(Exception):
    """Azure answered the handshake with `status` (not 101)."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"Azure OpenAI refused the WebSocket with {status}")
        self.status = status
        self.headers = headers
        self.body = body


class UpstreamSocketClosed(Exception):
    """The upstream WebSocket is closed; `dropped` when Azure sent no close frame."""

    def __init__(self, code: int | None, reason: str, dropped: bool) -> None:
        super().__init__(f"the upstream WebSocket closed ({code})")
        self.code = code
        self.reason = reason
        self.dropped = dropped


def sendable_close(code: int | None) -> int:
    """`code` if a close frame may carry it, else 1000 (a normal close)."""
    if code is None or code in _UNSENDABLE or not (1000 <= code <= 4999):
        return 1000
    return code


class UpstreamSocket:
    """An open WebSocket to Azure."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol Azure accepted (None: none)."""
        return self._connection.subprotocol

    @property
    def response_headers(self) -> Mapping[str, str]:
        response = self._connection.response
        return response.headers if response is not None else {}

    async def receive(self) -> str | bytes:
        """The next message; `UpstreamSocketClosed` once the connection has ended."""
        try:
            return await self._connection.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, data: str | bytes) -> None:
        """Send one message; waits while Azure is not reading."""
        try:
            await self._connection.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame at once; the handshake's end is waited for at most
        `_CLOSE_TIMEOUT`, then the TCP connection is closed anyway."""
        await self._connection.close(sendable_close(code), reason[:123])

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        transport = self._connection.transport
        if transport is not None:
            transport.abort()


class _Connect(connect):
    """`websockets`' connect, never following a redirect: the library would send our
    headers to wherever the answer points (on another origin it drops only
    `Authorization` and cookies, not `api-key`). `open_socket` makes a redirect a 502."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def open_socket(url: str, headers: Mapping[str, str], settings: UpstreamSettings,
                      subprotocols: Sequence[str] = (), *,
                      resolver: Resolver = system_resolver) -> UpstreamSocket:
    """Connect to `url` (ws:// or wss://) with `headers`, offering `subprotocols`;
    raises as the module says. Without a proxy, Azure's addresses (`resolver`'s) are
    raced as FastTransport races them (fast/dial.py); websockets tried them one after
    the other, so one dropping packets took the whole `connect_timeout`."""
    configured = settings.socks_proxy or settings.http_proxy or None  # as transport.py's
    proxy = None
    if configured is not None and not configured.startswith("http://"):
        # The SOCKS proxy resolves Azure's name, as aiohttp-socks's connector does (rdns):
        # for socks5:// and socks4:// websockets resolved it here. A user without a
        # password goes with an empty one, as for aiohttp (websockets refused the URL).
        proxy = with_password(configured).replace("socks5://", "socks5h://", 1).replace(
            "socks4://", "socks4a://", 1)
    offered = [Subprotocol(name) for name in subprotocols] or None
    race = _Race()
    sock = None
    try:
        async with asyncio.timeout(settings.connect_timeout):
            # The socket is the loop's from here: it closes it if the connection fails
            # (asyncio and uvloop alike), and the connection's close does after.
            # (None through a SOCKS proxy: websockets passes python-socks' own.)
            sock = await _socket(url, configured, resolver, race) if proxy is None else None
            dialled: dict[str, Any] = {"sock": sock} if sock is not None else {}
            if url.startswith("wss://"):
                # TLS names a fully qualified host (`x.openai.azure.com.`) without its
                # dot, as aiohttp and Go do: websockets checked the certificate against
                # `x.openai.azure.com.`, which none names.
                dialled["server_hostname"] = (urlsplit(url).hostname or "").rstrip(".")
            connection = await _Connect(
                url, additional_headers=dict(headers), user_agent_header=_USER_AGENT,
                subprotocols=offered, proxy=proxy, **dialled,
                open_timeout=settings.connect_timeout, compression=None,
                max_size=_MAX_MESSAGE, max_queue=_MAX_QUEUE, close_timeout=_CLOSE_TIMEOUT,
            )
    except InvalidStatus as exc:
        response = exc.response
        if response.status_code < 400:  # a redirect (not followed) or another oddity
            raise UpstreamError(f"Azure OpenAI answered the WebSocket with "
                                f"{response.status_code}, not 101.") from None
        raise UpstreamRefused(response.status_code, dict(response.headers.raw_items()),
                              bytes(response.body or b"")) from None
    except TimeoutError:
        if sock is None and race.missed and min(race.missed)[0] < _TIMED_OUT:
            # connect_timeout ended the race, but an address had said more than silence.
            raise race.failure(url, timed_out=True) from None
        # `open_timeout` spans the proxy's tunnel and Azure's handshake: which one hung
        # cannot be told apart, but the proxy is named as a place to look.
        through = f" (through the upstream proxy {proxy_name(configured)})" if configured else ""
        raise UpstreamTimeout(f"Azure OpenAI did not accept the WebSocket in time{through}.",
                              request_sent=True) from None
    except (OSError, WebSocketException, asyncio.IncompleteReadError) as exc:
        if sock is None and race.missed:  # every address failed
            raise race.failure(url) from None
        raise _unreachable(exc, configured, url) from None
    return UpstreamSocket(connection)


async def _socket(url: str, http_proxy: str | None, resolver: Resolver,
                  race: _Race) -> socket.socket:
    """A TCP socket to `url`'s host: the first of its addresses that accepts (`race`
    notes those that failed), or a tunnel through `http_proxy` (tunnel.py; websockets'
    own CONNECT logged a traceback when the proxy closed during it), which resolves
    Azure's name itself (the proxy's own addresses' failures are tunnel.py's to tell)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)
    if http_proxy is None:
        return await _dial(host, port, resolver, race)
    return await open_tunnel(http_proxy, host, port, _USER_AGENT,
                             functools.partial(_dial, resolver=resolver, race=_Race()))


async def _dial(host: str, port: int, resolver: Resolver, race: _Race) -> socket.socket:
    """A TCP socket connected to the first of `host`'s addresses that accepts; each that
    fails is noted in `race`."""
    addresses = await resolver(host, port)
    race.addresses = len(addresses)
    loop = asyncio.get_running_loop()
    families = dict((address, family) for family, address in addresses)

    async def connect(address: str) -> socket.socket:
        sock = socket.socket(families[address], socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, (address, port))
        except OSError as exc:
            sock.close()
            race.missed.append(_missed(address, exc))
            raise
        except BaseException:
            sock.close()
            raise
        return sock

    return await dial(loop, addresses, connect, socket.socket.close)


class _Race:
    """Azure's addresses raced for a WebSocket: how many, and those that failed, how
    telling each failure is (`_REFUSED`...) and what to say of it (text, not the
    exception, whose traceback would keep the race's frames alive)."""

    def __init__(self) -> None:
        self.addresses = 0
        self.missed: list[tuple[int, str]] = []

    def failure(self, url: str, timed_out: bool = False) -> UpstreamUnreachable:
        """Every address failed or, `timed_out`, connect_timeout ended the race: the
        failures, the most telling first. fast/dial.py raises the last, as likely the
        least telling (an IPv6 route missing after the IPv4 address refused), and
        connect_timeout hid a refusal behind the silence of another address."""
        told = [text for _, text in sorted(self.missed)][:_MOST_TOLD]
        if timed_out and len(self.missed) < self.addresses:
            told.append("no other address answered in time")
        return UpstreamUnreachable(
            f"Could not open a WebSocket to Azure OpenAI at {urlsplit(url).hostname}: "
            f"{'; '.join(told)}.", request_sent=False)


def _missed(address: str, exc: OSError) -> tuple[int, str]:
    """How telling `address`'s failure `exc` is, and what to say of it (`_Race`'s)."""
    if isinstance(exc, ConnectionRefusedError):
        rank = _REFUSED
    elif exc.errno in _NO_ROUTE:
        rank = _NO_ROUTE_FOR_IT
    elif isinstance(exc, TimeoutError):
        rank = _TIMED_OUT
    else:
        rank = _OTHER
    said = os.strerror(exc.errno) if exc.errno else proxy_said(exc)
    return rank, f"{address}: {said}"


def _unreachable(exc: BaseException, proxy: str | None, url: str) -> UpstreamUnreachable:
    """Our error for a handshake that failed with `exc`: a SOCKS proxy's doing (a
    refusal, not reachable) named and told as for aiohttp's client (an HTTP proxy's
    tunnel.py tells)."""
    if proxy is not None:
        named, host = proxy_name(proxy), urlsplit(url).hostname or ""
        if isinstance(exc, ProxyError):  # a SOCKS refusal (its cause)
            cause = exc.__cause__ or exc
            return proxy_refused(named, host, proxy_said(cause), getattr(cause, "error_code", None))
        # Only the proxy is connected to.
        if isinstance(exc, (python_socks.ProxyConnectionError, ConnectionRefusedError,
                            socket.gaierror)):
            return proxy_unreachable(named, host, proxy_said(exc))
    if isinstance(exc, ssl.SSLError):  # on the address that accepted, or the tunnel
        return UpstreamUnreachable(
            f"Could not open a WebSocket to Azure OpenAI at {urlsplit(url).hostname}: TLS "
            f"failed ({exc.reason or type(exc).__name__}).", request_sent=False)
    return UpstreamUnreachable(
        f"Could not open a WebSocket to Azure OpenAI ({type(exc).__name__}).",
        request_sent=False)


def _closed(exc: ConnectionClosed) -> UpstreamSocketClosed:
    received = exc.rcvd
    if received is None:
        # No close frame from Azure: the connection dropped, or Azure broke the protocol
        # (a message past `_MAX_MESSAGE`, a bad frame) and the library closed it, sending
        # the close (1009, 1002...) itself: a failure either way, never Azure's clean end.
        return UpstreamSocketClosed(None, "", dropped=True)
    return UpstreamSocketClosed(received.code, received.reason, dropped=False)
