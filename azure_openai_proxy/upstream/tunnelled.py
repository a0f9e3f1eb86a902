"""aiohttp's connector through the upstream proxy (`proxy_connector`): a SOCKS proxy's is
aiohttp-socks' (proxied.py), an HTTP proxy's the gateway's own CONNECT (tunnel.py, as
the realtime WebSockets'), with TLS to Azure over the tunnel.

python-socks, under aiohttp-socks, read an HTTP proxy's answer to CONNECT in one read
and took its first line for all of it: a proxy writing its head in pieces (the status
line, then its headers, then the blank line: TCP keeps no message bounds) had the rest
read as Azure's answer (a 502 'ClientResponseError' on every new connection) or fed to
TLS. tunnel.py reads the head to its blank line however it comes.

The failures are proxied.py's words, raised here (aiohttp passes them on as they are):

    the proxy cannot be reached, refused the tunnel, closed   tunnel.py's
    TLS with Azure through the tunnel failed                  `proxy_tls_failed`
    no tunnel (and TLS) within connect_timeout                `proxy_timeout`
"""

from __future__ import annotations

import asyncio
import socket
from ssl import SSLContext
from typing import Any
from urllib.parse import urlsplit

import aiohappyeyeballs
import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp_socks import ProxyConnector, ProxyType

from azure_openai_proxy import __version__
from azure_openai_proxy.upstream.proxied import (
    proxy_name,
    proxy_said,
    proxy_timeout,
    proxy_tls_failed,
    socks_connector,
)
from azure_openai_proxy.upstream.tunnel import open_tunnel

__all__ = ["proxy_connector"]

_USER_AGENT = f"azure-openai-proxy/{__version__}"
# RFC 8305's Connection Attempt Delay, as aiohttp's client and fast/dial.py.
_NEXT_ADDRESS_AFTER = 0.25


def proxy_connector(url: str, **common: Any) -> aiohttp.BaseConnector:
    """One pooled, keep-alive connector through the proxy `url` (check_proxy's: http://
    or socks), so an upstream proxy costs no new connection per request; `common` is
    aiohttp's TCPConnector's (limit, keepalive_timeout...)."""
    if url.startswith("http://"):
        return _TunnelConnector(url, **common)
    return socks_connector(url, **common)


class _TunnelConnector(ProxyConnector):
    """aiohttp-socks' connector (its pool, aiohttp's names left unresolved: the proxy
    resolves Azure's), its way to the proxy replaced by tunnel.py's CONNECT. If a release
    of aiohttp-socks stopped calling `_connect_via_proxy`, python-socks' CONNECT would
    be back, and tests/e2e/test_proxyhead_connect.py's split answer fails."""

    def __init__(self, url: str, **common: Any) -> None:
        parts = urlsplit(url)
        super().__init__(host=parts.hostname or "", port=parts.port or 80,
                         proxy_type=ProxyType.HTTP, rdns=True, **common)
        self._url = url  # with its user and password, for CONNECT alone
        self._named = proxy_name(url)

    async def _connect_via_proxy(
        self, host: str, port: int, ssl: SSLContext | None = None,
        timeout: float | None = None,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """A connection to Azure's `host`:`port` through the tunnel, TLS on it with `ssl`;
        `timeout` (aiohttp's sock_connect, connect_timeout) spans it all, as
        python-socks' did."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                sock = await open_tunnel(self._url, host, port, _USER_AGENT, _dial)
                try:
                    # The socket is the loop's from here: closed if this fails.
                    return await loop.create_connection(
                        lambda: ResponseHandler(loop), sock=sock, ssl=ssl,
                        server_hostname=host.rstrip(".") if ssl is not None else None)
                except OSError as exc:  # ssl.SSLError is one; a reset, a close
                    raise proxy_tls_failed(self._named, host, proxy_said(exc)) from None
        except TimeoutError:
            raise proxy_timeout(self._named, host) from None


async def _dial(host: str, port: int) -> socket.socket:
    """A socket to the proxy: its addresses raced as aiohttp races Azure's without a
    proxy (aiohappyeyeballs, aiohttp's own; fast/dial.py's package imports transport.py,
    which imports this module)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=_NEXT_ADDRESS_AFTER, interleave=1)
