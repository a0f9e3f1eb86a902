"""`max_connections`: past it a new connection is told 503 in OpenAI's shape and closed
(never left hanging); the connections already open keep being served."""

from __future__ import annotations

import asyncio
import functools
import socket

import orjson
import pytest

from azure_openai_proxy.http.connection import _HttpConnection
from tests.http.engine import Engine, engine, post, read_reply, rest, until

GET = b"GET /echo?q=%d HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_connection_over_the_cap_gets_a_503_and_the_others_are_served() -> None:
    async with engine(max_connections=2) as e:
        open_ = [await e.connect() for _ in range(2)]
        for n, (reader, writer) in enumerate(open_):
            writer.write(GET % n)
            assert (await read_reply(reader))[0] == 200
        reader, writer = await e.connect()
        writer.write(GET % 9)
        status, headers, body = await read_reply(reader)
        assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
        error = orjson.loads(body)["error"]
        assert error["code"] == "server_overloaded" and error["message"]
        assert await rest(reader) == b""
        writer.close()
        for n, (reader, writer) in enumerate(open_):  # still served
            writer.write(GET % (10 + n))
            assert (await read_reply(reader))[1]["x-query"] == str(10 + n)
        open_[0][1].close()
        await until(lambda: len(e.server.connections) == 1)
        reader, writer = await e.connect()  # room again
        writer.write(GET % 20)
        assert (await read_reply(reader))[0] == 200
        writer.close()
        open_[1][1].close()


async def test_a_refused_connection_that_sends_nothing_still_gets_its_503() -> None:
    async with engine(max_connections=1) as e:
        first = await e.connect()
        await until(lambda: len(e.server.connections) == 1)
        reader, writer = await e.connect()
        status, _, _ = await read_reply(reader)
        assert status == 503 and await rest(reader) == b""
        await until(lambda: not e.server.refusing)
        writer.close()
        first[1].close()


def _answered(e: Engine, conn: _HttpConnection, requests: int) -> bool:
    return len(e.events.requests) == requests and not conn.serving


async def _stuck_client(e: Engine) -> tuple[asyncio.StreamWriter, _HttpConnection]:
    """A client that sends keep-alive requests and reads nothing: sent until the server
    has answered them all and part of the answers waits in its transport's buffer
    (below the high-water mark, so writing never paused)."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", e.port))
    _, writer = await asyncio.open_connection(sock=client)
    await until(lambda: len(e.server.connections) == 1)
    conn = next(iter(e.server.connections))
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for sent in range(1, 2001):
        writer.write(post("/echo", b"x" * 1000))
        await writer.drain()
        await until(functools.partial(_answered, e, conn, sent))
        if conn.transport.get_write_buffer_size():
            assert not conn.write_paused
            return writer, conn
    raise AssertionError("the server's answers never waited in its buffer")


@pytest.mark.parametrize("close", ["keep-alive deadline", "Connection: close", "a refusal"])
async def test_a_closed_connection_whose_client_reads_nothing_is_cut_after_send_timeout(
        close: str) -> None:
    """Closing waits to flush what is buffered; a client that reads nothing would keep
    the connection (its fd, its place under the cap) for ever."""
    async with engine(head_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5,
                      send_timeout=0.5, max_connections=1) as e:
        writer, conn = await _stuck_client(e)
        if close == "Connection: close":
            writer.write(post("/echo", b"x" * 1000, "Connection: close\r\n"))
            await writer.drain()
        elif close == "a refusal":  # a 400, then the lingering close
            writer.write(b"NOT HTTP\r\n\r\n")
            await writer.drain()
        await until(lambda: conn.closed)
        await until(lambda: not e.server.connections)
        reader, other = await e.connect()  # its place is free
        other.write(GET % 1)
        assert (await read_reply(reader))[0] == 200
        other.close()
        writer.close()
