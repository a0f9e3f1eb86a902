"""A connection to Azure through an HTTP proxy's CONNECT tunnel (`tunnelled`), for
FastTransport (fast/): tunnel.py's CONNECT (the realtime WebSockets' too), then TLS to
Azure over the tunnelled socket with asyncio's public `loop.create_connection(sock=...)`.

aiohttp's client had it through aiohttp-socks' private `_connect_via_proxy`, overridden
because python-socks, under aiohttp-socks, read the proxy's answer to CONNECT in one read
and took its first line for all of it (a head written in pieces was a 502 on every new
connection). A library's private name may change in any release; asyncio's
`create_connection` and our own CONNECT do not. SOCKS proxies stay aiohttp-socks'
(its public `ProxyConnector.from_url`, proxied.py) for aiohttp's client.

The failures are proxied.py's words, raised here:

    the proxy cannot be reached, refused the tunnel, closed   tunnel.py's
    TLS with Azure through the tunnel failed                  `proxy_tls_failed`
    no tunnel (and TLS) within connect_timeout                `proxy_timeout`

None of them sent a byte of the request (`request_sent` is False).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from ssl import SSLContext
from typing import TypeVar

import aiohappyeyeballs

from azure_openai_proxy import __version__
from azure_openai_proxy.upstream.proxied import (
    proxy_name,
    proxy_said,
    proxy_timeout,
    proxy_tls_failed,
)
from azure_openai_proxy.upstream.tunnel import open_tunnel

__all__ = ["tunnelled"]

_USER_AGENT = f"azure-openai-proxy/{__version__}"
# RFC 8305's Connection Attempt Delay, as fast/dial.py's (a proxy's host of several
# addresses is raced as Azure's is without a proxy).
_NEXT_ADDRESS_AFTER = 0.25

Connection = TypeVar("Connection", bound=asyncio.BaseProtocol)


async def tunnelled(proxy: str, host: str, port: int, protocol: Callable[[], Connection],
                    ssl: SSLContext | None, timeout: float) -> Connection:
    """`protocol()`'s connection to Azure's `host`:`port` through the HTTP proxy `proxy`
    (check_proxy's http:// URL, with its user and password for CONNECT alone), TLS on it
    with `ssl` (checked against `host` without a trailing dot, as Go names it);
    `timeout` (connect_timeout) spans the tunnel and TLS."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            sock = await open_tunnel(proxy, host, port, _USER_AGENT, _dial)
            try:
                # The socket is the loop's from here: closed if this fails.
                _, connection = await loop.create_connection(
                    protocol, sock=sock, ssl=ssl,
                    server_hostname=host.rstrip(".") if ssl is not None else None)
            except OSError as exc:  # ssl.SSLError is one; a reset, a close
                raise proxy_tls_failed(proxy_name(proxy), host, proxy_said(exc)) from None
    except TimeoutError:
        raise proxy_timeout(proxy_name(proxy), host) from None
    return connection


async def _dial(host: str, port: int) -> socket.socket:
    """A socket to the proxy: its addresses raced (aiohappyeyeballs, aiohttp's own, which
    takes getaddrinfo's answer and gives a connected socket)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=_NEXT_ADDRESS_AFTER, interleave=1)
