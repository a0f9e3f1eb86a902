"""A fully qualified Azure host (`NAME.openai.azure.com.`, DNS's root) for the realtime
WebSockets: TLS names the host without its trailing dot (SNI and the certificate check,
as aiohttp's client and Go's crypto/tls do). websockets sent `localhost.` and checked the
certificate against it: CERTIFICATE_VERIFY_FAILED, every session refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.websocket import open_socket
from tests.unit.test_revh1_ws_dial import sni_recording_context


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def test_a_fully_qualified_host_is_named_without_its_dot_in_tls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context, names = sni_recording_context(tmp_path, monkeypatch)
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        looked_up.append(host)
        return [(socket.AF_INET, "127.0.0.1")]

    async with serve(_echo, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        upstream = await open_socket(f"wss://localhost.:{port}/openai/realtime", {},
                                     UpstreamSettings(connect_timeout=3), resolver=resolver)
        await upstream.send("hello")
        assert await upstream.receive() == "hello"
        await upstream.close()
    assert names == ["localhost"]
    assert looked_up == ["localhost."]  # DNS is asked the name as written
