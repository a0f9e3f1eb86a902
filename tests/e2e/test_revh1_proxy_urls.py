"""What check_proxy lets through, the clients send, aiohttp's client and the realtime
WebSocket's alike: a SOCKS5 user and password of up to 255 ASCII characters (one past
that was a ValueError, a 500 on every request) as RFC 1929 says; an HTTP proxy's in
UTF-8."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import quote

import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.transport import UpstreamRequest
from azure_openai_proxy.upstream.websocket import open_socket
from tests.e2e.test_revh1_ws_proxy import Serve

USER, PASSWORD = "alice", "p" * 255


async def _both_refused(serve: Serve, key: str, url: str, said: str) -> None:
    """Both clients ask through a proxy on loopback doing `serve` (PORT in `url` its
    port), and are refused with `said`."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(connect_timeout=5, **{key: url.replace("PORT", str(port))})
    transport = transport_for(settings)
    try:
        with pytest.raises(UpstreamUnreachable, match=said):
            await transport.send(UpstreamRequest("GET", "http://azure.invalid/x", {}))
        with pytest.raises(UpstreamUnreachable, match=said):
            await open_socket("ws://azure.invalid/x", {}, settings)
    finally:
        await transport.close()
        server.close()


async def test_the_longest_socks5_credentials_are_sent_by_both_clients() -> None:
    sent: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = await reader.readexactly(2)
        assert 2 in await reader.readexactly(greeting[1])  # user and password offered
        writer.write(b"\x05\x02")
        head = await reader.readexactly(2)
        user = await reader.readexactly(head[1])
        password = await reader.readexactly((await reader.readexactly(1))[0])
        sent.append(head[:1] + user + b":" + password)
        writer.write(b"\x01\x00")  # granted
        await reader.readexactly(4)
        await reader.readexactly((await reader.readexactly(1))[0] + 2)
        writer.write(b"\x05\x02\x00\x01" + bytes(6))  # but not allowed by ruleset
        await writer.drain()
        writer.close()

    await _both_refused(proxy, "socks_proxy", f"socks5://{USER}:{PASSWORD}@127.0.0.1:PORT",
                        "not allowed by ruleset")
    assert sent == [f"\x01{USER}:{PASSWORD}".encode()] * 2


async def test_an_http_proxys_credentials_go_as_utf8_from_both_clients() -> None:
    """As Go's net/http (and websockets, and browsers) send them. aiohttp-socks sent them
    Latin-1: `ü` as one byte, the realtime sockets as two (one of the two got a 407),
    and a character past Latin-1 was a UnicodeEncodeError, a 500 on every request."""
    heads: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    user, password = "jürgen", "pw用:%"
    await _both_refused(refuse, "http_proxy",
                        f"http://{quote(user)}:{quote(password)}@127.0.0.1:PORT", "407")
    sent = base64.b64encode(f"{user}:{password}".encode())
    assert len(heads) == 2
    for head in heads:
        assert b"\r\nProxy-Authorization: Basic " + sent + b"\r\n" in head, head
