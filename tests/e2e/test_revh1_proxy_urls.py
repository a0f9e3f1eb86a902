"""What check_proxy lets through, the clients send: a SOCKS5 user and password of up to
255 ASCII characters (one past that was a ValueError, a 500 on every request) reach the
proxy as RFC 1929 says, from aiohttp's client and the realtime WebSocket's alike."""

from __future__ import annotations

import asyncio

import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.transport import AiohttpTransport, UpstreamRequest
from azure_openai_proxy.upstream.websocket import open_socket

USER, PASSWORD = "alice", "p" * 255


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

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(socks_proxy=f"socks5://{USER}:{PASSWORD}@127.0.0.1:{port}",
                                connect_timeout=5)
    transport = AiohttpTransport(settings)
    try:
        with pytest.raises(UpstreamUnreachable, match="not allowed by ruleset"):
            await transport.send(UpstreamRequest("GET", "http://azure.invalid/x", {}))
        with pytest.raises(UpstreamUnreachable, match="not allowed by ruleset"):
            await open_socket("ws://azure.invalid/x", {}, settings)
    finally:
        await transport.close()
        server.close()
    assert sent == [f"\x01{USER}:{PASSWORD}".encode()] * 2
