"""Timeouts are deadlines: a head or body trickled in a byte at a time is cut when its
time is up, not only a silent one; keep-alive idling has its own timeout."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from tests.http.engine import engine, read_reply, rest


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """One byte every `every` seconds (bounded by `data`), until the server closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def test_a_head_trickled_byte_by_byte_is_cut_at_the_head_deadline() -> None:
    async with engine(head_timeout=1.0, body_timeout=30, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        # 60 bytes at one per 0.1 s: 6 s of a head that never stops arriving.
        sender = asyncio.create_task(
            trickle(writer, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40, 0.1))
        status, headers, body = await read_reply(reader, wait=4)
        assert status == 408 and headers["connection"] == "close"
        assert orjson.loads(body)["error"]["code"] == "timeout"
        assert await rest(reader) == b""
        sender.cancel()
        writer.close()


async def test_a_body_trickled_byte_by_byte_gets_one_408_then_close() -> None:
    async with engine(head_timeout=30, body_timeout=1.0, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
        sender = asyncio.create_task(trickle(writer, b"b" * 60, 0.1))
        status, headers, body = await read_reply(reader, wait=4)
        assert status == 408 and headers["connection"] == "close"
        assert "error" in orjson.loads(body)
        assert await rest(reader) == b""  # nothing more: one answer, then closed
        sender.cancel()
        writer.close()


async def test_a_trickled_body_the_handler_is_not_reading_yet_gets_its_408() -> None:
    """A request pipelined behind a slow one, its body trickling: its 408 comes in its
    turn, after the slow one's answer."""
    async with engine(head_timeout=30, body_timeout=1.0, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
        sender = asyncio.create_task(trickle(writer, b"b" * 60, 0.1))
        await asyncio.wait_for(reader.readuntil(b"first"), 5)
        e.events.release.set()
        tail = await rest(reader, wait=8)
        assert tail.count(b"HTTP/1.1 ") == 1 and b"HTTP/1.1 408 " in tail
        assert b"data: second" in tail.split(b"HTTP/1.1 408")[0]
        sender.cancel()
        writer.close()


async def test_keep_alive_idling_is_not_the_head_timeout() -> None:
    async with engine(head_timeout=0.5, body_timeout=30, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /echo?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[0] == 200
        await asyncio.sleep(1.5)  # idle three head timeouts: keep-alive allows it
        writer.write(b"GET /echo?q=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await read_reply(reader)
        assert (status, headers["x-query"]) == (200, "2")
        writer.close()


async def test_an_idle_keep_alive_connection_closes_without_an_answer() -> None:
    async with engine(head_timeout=30, body_timeout=30, keepalive_timeout=0.5) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[0] == 200
        assert await rest(reader, wait=5) == b""
        writer.close()


async def test_a_new_connection_that_sends_nothing_is_cut_at_the_head_deadline() -> None:
    async with engine(head_timeout=0.5, body_timeout=30, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        status, _, _ = await read_reply(reader, wait=5)
        assert status == 408 and await rest(reader) == b""
        writer.close()


async def test_the_body_deadline_waits_for_100_continue() -> None:
    """A client that asked for "100 Continue" sends nothing until it comes: while the
    request waits behind a slow one its body is not late."""
    async with engine(head_timeout=30, body_timeout=0.5, keepalive_timeout=30) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"first"), 5)
        await asyncio.sleep(1.5)  # three body timeouts behind the stream
        e.events.release.set()
        await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"data")
        status, _, body = await read_reply(reader)
        assert (status, body) == (200, b"data")
        writer.close()
