"""A request body waiting unread (a request pipelined behind a slow answer) is held up to
`BODY_HIGH_WATER` in memory, whatever the size of the pieces it comes in: a chunked
body in chunks of two bytes is a Python object per two bytes, each costing some 40
bytes more than its data, and counted by its data alone it held about 20 times the
mark per connection (5.9 MB; 59 GB over `max_connections`' 10,000)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tracemalloc

import orjson

from azure_openai_proxy.http.request import BODY_HIGH_WATER
from tests.http.engine import engine, pending, read_reply, until


async def test_a_body_in_tiny_chunks_is_held_to_the_high_water_mark() -> None:
    loop = asyncio.get_running_loop()
    wire = b"2\r\nab\r\n" * 400_000  # 2.8 MB on the wire, 800 KB of body in 400,000 chunks
    async with engine() as e:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", e.port))
            await loop.sock_sendall(client, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n")
            await until(lambda: pending(e) == 1)  # waits behind the stream, unread
            (conn,) = e.server.connections
            tracemalloc.start()
            try:
                sending = asyncio.ensure_future(loop.sock_sendall(client, wire))
                await until(lambda: conn.reading_paused)
                await asyncio.sleep(0.2)  # what was in flight is read and parsed
                held = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
            # The mark, and what one read of the socket (256 KB) adds past it.
            assert held < 4 * BODY_HIGH_WATER, held
            e.events.release.set()  # then the body is read whole
        finally:
            client.close()


async def test_a_body_in_many_small_chunks_that_is_read_passes_whole() -> None:
    """The mark pauses reading; it refuses nothing: a body the handler reads as it comes
    (a 25 MB audio upload in 8 KB chunks, as the openai SDK or a browser's fetch stream
    send it) arrives whole, each piece's cost counted only while it waits unread."""
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"2000\r\n" + b"a" * 8192 + b"\r\n"
        for _ in range(25 * 128 // 64):
            writer.write(piece * 64)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        status, _, sizes = await read_reply(reader, 30)
        assert (status, sum(orjson.loads(sizes))) == (200, 25 * 1024 * 1024)
        writer.close()
