"""A refusal is read even by a client that is still sending: the server shuts its side
after the answer and drops what comes, instead of closing on unread bytes (which makes
the kernel send a reset that can destroy the answer)."""

from __future__ import annotations

import asyncio

from tests.http.engine import engine, rest, until


async def test_a_client_still_sending_reads_its_400_and_then_the_end() -> None:
    async with engine() as e:
        reader, writer = await e.connect()
        writer.write(b"GARBAGE \x01\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 400 ")
        for _ in range(64):  # 4 MB after the refusal, all read and dropped
            writer.write(b"x" * 65536)
            await asyncio.wait_for(writer.drain(), 10)
        received = await rest(reader)  # the body, then the end; no ConnectionResetError
        assert received.endswith(b"}") and b"HTTP/1.1 " not in received
        writer.close()


async def test_a_lingering_connection_is_closed_by_the_sweep() -> None:
    async with engine(head_timeout=0.4, body_timeout=30, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /echo HTTP/1.1\r\nHo")  # then nothing: a 408, and the client never closes
        received = await rest(reader)
        assert received.startswith(b"HTTP/1.1 408 ")
        await until(lambda: not e.server.connections)
        writer.close()
