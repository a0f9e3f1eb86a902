"""An HTTP proxy's CONNECT tunnel for the realtime WebSockets (websocket.py): a socket to
the proxy, the CONNECT request, the proxy's answer read up to its blank line, and the
socket handed on, tunnelled, to websockets (`sock=`), which does TLS and the handshake
over it as over a socket raced to Azure.

websockets' own CONNECT client fed its reader the end of the stream twice when the proxy
closed during CONNECT (at the FIN, then at the connection's loss): an EOFError the loop
logged, 'Exception in callback' and a traceback, at every such failure (the client still
got its 502). The failures are proxied.py's, as the module there tells them:

    the proxy cannot be reached          `proxy_unreachable`
    not 2xx, a close, a garbled answer   `proxy_refused`
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes, urlsplit

from azure_openai_proxy.upstream.proxied import (
    proxy_name,
    proxy_refused,
    proxy_said,
    proxy_unreachable,
)

__all__ = ["open_tunnel"]

# An answer's head is a status line and a few headers: more is not a proxy's.
_MOST_HEAD = 16 * 1024
# Lines may end in LF alone, which a client may take (RFC 9112 2.2), as Go's net/http and
# python-socks did: a proxy answering so waited out connect_timeout, a 504.
_STATUS = re.compile(rb"HTTP/1\.[01] ([1-9]\d\d)(?: ([^\r\n]*))?\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")

Dial = Callable[[str, int], Awaitable[socket.socket]]


async def open_tunnel(proxy: str, host: str, port: int, user_agent: str,
                      dial: Dial) -> socket.socket:
    """A socket to `proxy` (an http:// URL, check_proxy's: a host and a port) that its
    CONNECT has tunnelled to `host`:`port`; `dial` connects to the proxy's host."""
    parts = urlsplit(proxy)
    named = proxy_name(proxy)
    try:
        sock = await dial(parts.hostname or "", parts.port or 80)
    except OSError as exc:
        raise proxy_unreachable(named, host, proxy_said(exc)) from None
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, _request(parts.netloc, host, port, user_agent))
        said, status = await _answer(loop, sock)
        if status is None or not 200 <= status < 300:
            raise proxy_refused(named, host, said, status)
    except OSError as exc:  # reset while asking or reading
        sock.close()
        raise proxy_refused(named, host, proxy_said(exc), None) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _request(netloc: str, host: str, port: int, user_agent: str) -> bytes:
    """CONNECT with the URL's user and password, their percent-encoded bytes as written
    (`TOKEN@` with an empty password, as Go's net/http and aiohttp's client send it)."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", f"User-Agent: {user_agent}"]
    userinfo, at, _ = netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        pair = unquote_to_bytes(user) + b":" + unquote_to_bytes(password)
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(loop: asyncio.AbstractEventLoop, sock: socket.socket
                  ) -> tuple[str, int | None]:
    """What the proxy said (its status line's, printable) and its status; None when it
    closed before its head's end or said what is no HTTP answer. A 2xx's head is all it
    may send: Azure speaks after the client, so more bytes would be lost to websockets."""
    head = b""
    while (end := _HEAD_END.search(head)) is None:
        if len(head) > _MOST_HEAD:
            return "an answer head past 16 KB", None
        received = await loop.sock_recv(sock, 4096)
        if not received:
            return "it closed the connection before answering", None
        head += received
    found = _STATUS.match(head)
    if found is None:
        return "not an HTTP answer", None
    status, reason = int(found[1]), (found[2] or b"").decode("latin-1")
    if 200 <= status < 300 and end.end() != len(head):
        return f"{status} {proxy_said(reason)} and bytes after it", None
    return proxy_said(f"{status} {reason}"), status
