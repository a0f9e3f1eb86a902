"""FastTransport and a server out of step (session 23, branch advstream): bytes after an
answer's end, before the next request, are a second answer nobody asked for. Taken for
the next request's (the pooled connection's parser left inside its body), they cut that
answer's head in two: its first bytes ended the stray body, the rest failed to parse and
closed the connection, and the next request waited for ever (a closed connection's read
timeout never fires; over 60 s here on main). The connection is closed at the stray
bytes instead; the next request gets a new one."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.unit.test_fasttransport import read_head, serve_raw

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"  # its body 8 bytes short


async def test_a_stray_answer_after_the_end_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(STRAY)  # while the caller still holds the answer

    url, server, connections = await serve_raw(handler)
    client = FastTransport(UpstreamSettings(read_timeout=2.0))
    for _ in range(3):
        answer = await client.send(UpstreamRequest("GET", url + "/", {}))
        assert await answer.read(100) == b"hi"
        await asyncio.sleep(0.2)  # the stray bytes arrive
        answer.close()
    assert len(connections) == 3
    await client.close()
    server.close()
