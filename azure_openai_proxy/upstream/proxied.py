"""An upstream proxy (`upstream.http_proxy`, `upstream.socks_proxy`): a SOCKS proxy's
connector for aiohttp's client, and every proxy's failures told as ours, naming the proxy
and what it said (never the user and password of its URL); the realtime WebSockets'
(websocket.py) tell theirs with the same words (`proxy_refused`, `proxy_unreachable`).

    the proxy cannot be reached          UpstreamUnreachable  502
    it refused the tunnel (407, 403,
    a SOCKS reply), closed or garbled     UpstreamUnreachable  502
    no TLS with Azure through the tunnel UpstreamUnreachable  502
    no tunnel within connect_timeout     UpstreamTimeout      504

An HTTP proxy's tunnel is tunnel.py's CONNECT, FastTransport's connections through it
tunnelled.py's; a SOCKS proxy's is aiohttp-socks' (python-socks'), through its public
`ProxyConnector.from_url`, for aiohttp's client.

None of them sent a byte of the request (`request_sent` is False): failover may send it
elsewhere.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError
from yarl import URL

from azure_openai_proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable

__all__ = [
    "PROXY_ERRORS", "proxy_failure", "proxy_name", "proxy_refused", "proxy_said",
    "proxy_timeout", "proxy_tls_failed", "proxy_unreachable", "socks_connector",
    "with_password",
]

# aiohttp-socks raises its own errors (not aiohttp's, not OSError) for proxy failures.
PROXY_ERRORS: tuple[type[Exception], ...] = (ProxyConnectionError, ProxyError, ProxyTimeoutError)
# What a proxy says is quoted, printable and at most this long (a reason phrase is its text).
_SAID_MOST = 120
_AUTH_HINT = " (the user and password in the proxy URL are missing or wrong)"


def socks_connector(url: str, **common: Any) -> aiohttp.BaseConnector:
    """aiohttp-socks' pooled connector through the SOCKS proxy `url`, so an upstream proxy
    costs no new connection per request."""
    connector: aiohttp.BaseConnector = ProxyConnector.from_url(
        with_password(url), rdns=True, **common)
    return connector


def with_password(url: str) -> str:
    """`socks5://USER@proxy` as `socks5://USER:@proxy`, the URL python-socks and
    websockets take (websockets refused the first). An HTTP proxy's `TOKEN@` is
    tunnel.py's to send (`Basic base64("TOKEN:")`, as Go's net/http sends it)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, place = rest.rpartition("@")
    if at and ":" not in userinfo:
        return f"{scheme}{sep}{userinfo}:@{place}"
    return url


def proxy_name(url: str) -> str:
    """The proxy as a message may name it: scheme, host and port, no credentials."""
    return str(URL(url).origin())


def proxy_failure(exc: Exception, proxy: str, host: str) -> UpstreamError:
    """Our error for aiohttp-socks' `exc` (one of `PROXY_ERRORS`), through `proxy`
    (`proxy_name`'s) toward Azure's `host`."""
    said = proxy_said(exc)
    if isinstance(exc, ProxyTimeoutError):
        return proxy_timeout(proxy, host)
    if isinstance(exc, ProxyConnectionError):
        return proxy_unreachable(proxy, host, said)
    return proxy_refused(proxy, host, said, getattr(exc, "error_code", None))


def proxy_timeout(proxy: str, host: str) -> UpstreamTimeout:
    """`proxy` opened no tunnel to `host` (or Azure's TLS through it) in time."""
    return UpstreamTimeout(
        f"The upstream proxy {proxy} did not open a connection to Azure OpenAI at {host} "
        "in time.", request_sent=False)


def proxy_tls_failed(proxy: str, host: str, said: str) -> UpstreamUnreachable:
    """`proxy` opened its tunnel, but TLS with `host` through it failed (`said`: why):
    no byte of the request was sent."""
    return UpstreamUnreachable(
        f"Cannot reach Azure OpenAI at {host}: TLS through the upstream proxy {proxy}'s "
        f"tunnel failed ({said}).", request_sent=False)


def proxy_unreachable(proxy: str, host: str, said: str) -> UpstreamUnreachable:
    """`proxy` cannot be reached (`said`: why)."""
    return UpstreamUnreachable(
        f"Cannot reach Azure OpenAI at {host}: the upstream proxy {proxy} cannot be "
        f"reached ({said}).", request_sent=False)


def proxy_refused(proxy: str, host: str, said: str, code: int | None) -> UpstreamUnreachable:
    """`proxy` opened no tunnel to `host`: it answered `said` (`code`, an HTTP status or a
    SOCKS reply's, if any), or closed."""
    hint = _AUTH_HINT if code == 407 or "authentication" in said.lower() else ""
    return UpstreamUnreachable(
        f"Cannot reach Azure OpenAI at {host}: the upstream proxy {proxy} did not open "
        f"a tunnel to it: {said}{hint}.", request_sent=False)


def proxy_said(exc: BaseException | str) -> str:
    """What `exc` (or a text) says, printable and short, for a message."""
    text = "".join(c if c.isprintable() else " " for c in str(exc)[:_SAID_MOST]).strip()
    return text or type(exc).__name__
