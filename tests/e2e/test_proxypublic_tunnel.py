"""FastTransport through an HTTP proxy (session 28, upstream/tunnelled.py): its pool
keeps the tunnels, so requests in turn to one origin share one CONNECT (as aiohttp's
connector did), and a proxy's head in pieces still opens it."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.piecemeal import ESTABLISHED, piecemeal_proxy


async def test_requests_in_turn_share_one_tunnel() -> None:
    answered: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                answered.append(head.split(b"\r\n")[0])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            writer.close()

    azure = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{azure.sockets[0].getsockname()[1]}/openai/x"
    async with piecemeal_proxy(*ESTABLISHED) as proxy:
        transport = FastTransport(UpstreamSettings(
            connect_timeout=5, http_proxy=f"http://127.0.0.1:{proxy.port}"))
        try:
            for _ in range(4):
                response = await transport.send(UpstreamRequest("GET", url, {}))
                assert await response.read(10) == b"ok"
                response.close()
        finally:
            await transport.close()
        if proxy.serving:  # its handler ends as the tunnel closes
            await asyncio.wait(proxy.serving, timeout=10)
    azure.close()
    assert answered == [b"GET /openai/x HTTP/1.1"] * 4  # origin-form: a tunnel, not a forward
    assert len(proxy.heads) == 1
