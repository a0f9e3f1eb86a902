"""Bounds on what Azure may send back, against raw servers on loopback: the answer's head
(FastTransport: 64 KiB, 128 headers) and a whole body read at once (both transports)."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from azure_openai_proxy.errors import (
    UpstreamAnswerTooLarge,
    UpstreamHeadTooLarge,
    UpstreamUnreachable,
)
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.connection import MAX_HEAD_BYTES, MAX_HEADERS
from azure_openai_proxy.upstream.transport import AiohttpTransport, Transport, UpstreamRequest
from tests.support import reserved_socket

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answer(head_lines: list[bytes], body: bytes = b"{}") -> bytes:
    lines = [b"HTTP/1.1 200 OK", *head_lines, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(url: str) -> UpstreamRequest:
    return UpstreamRequest("GET", url, {})


async def test_a_ten_megabyte_header_is_refused_after_64_kib_in_bounded_memory(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    piece = b"a" * 65536
    done = asyncio.Event()

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        try:
            for _ in range(160):  # 10 MiB, written as the client takes it
                writer.write(piece)
                await writer.drain()
        finally:
            done.set()

    url = await raw_server(huge)
    client = FastTransport(UpstreamSettings())
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamHeadTooLarge):
            await client.send(get(url))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await done.wait()  # the server's writes failed: the connection was dropped
    assert peak < 4 * 1024 * 1024, peak  # the 10 MiB value was never gathered
    assert client.connections_in_use() == 0
    await client.close()


async def test_more_than_128_headers_are_refused_and_128_accepted(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    def answer_with(count: int) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            headers = [b"X-H%d: v" % i for i in range(count - 1)]  # + Content-Length
            writer.write(answer(headers))
            await writer.drain()

        return handler

    client = FastTransport(UpstreamSettings())
    ok = await client.send(get(await raw_server(answer_with(MAX_HEADERS))))
    assert await ok.read(10) == b"{}"
    ok.close()
    with pytest.raises(UpstreamHeadTooLarge):
        await client.send(get(await raw_server(answer_with(MAX_HEADERS + 1))))
    assert client.connections_in_use() == 0
    await client.close()


async def test_heads_near_the_limit_and_big_bodies_in_the_first_read_pass(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    big_body = b"x" * (3 * MAX_HEAD_BYTES)

    async def long_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        value = b"v" * (MAX_HEAD_BYTES - 200)
        for byte in range(0, len(value), 4096):  # the head over many reads
            writer.write(b"HTTP/1.1 200 OK\r\nX-Long: " if byte == 0 else b"")
            writer.write(value[byte:byte + 4096])
            await writer.drain()
        writer.write(b"\r\nContent-Length: 2\r\n\r\n{}")

    async def head_and_big_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer([b"X-A: b"], big_body))  # one write: head and body together

    client = FastTransport(UpstreamSettings())
    first = await client.send(get(await raw_server(long_head)))
    assert await first.read(10) == b"{}"
    first.close()
    second = await client.send(get(await raw_server(head_and_big_body)))
    assert await second.read(len(big_body)) == big_body
    second.close()
    await client.close()


def transport_named(kind: str) -> Transport:
    return FastTransport(UpstreamSettings()) if kind == "fast" else AiohttpTransport(UpstreamSettings())


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_past_the_read_limit_is_refused_never_truncated(
    raw_server: Callable[[Handler], Awaitable[str]], kind: str, framing: str,
) -> None:
    body = b'{"data": "' + b"z" * 5000 + b'"}'

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # every request on this connection, until the client hangs up
            if framing == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for start in range(0, len(body), 1000):
                    part = body[start:start + 1000]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(answer([b"Content-Type: application/json"], body))
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")

    url = await raw_server(big)
    client = transport_named(kind)
    response = await client.send(get(url))
    with pytest.raises(UpstreamAnswerTooLarge):
        await response.read(len(body) - 1)
    response.close()
    exact = await client.send(get(url))
    assert await exact.read(len(body)) == body
    exact.close()
    assert client.connections_in_use() == 0
    await client.close()


@pytest.mark.parametrize("kind", [FastTransport, AiohttpTransport])
async def test_a_request_waiting_for_azures_head_counts_as_in_use(
    raw_server: Callable[[Handler], Awaitable[str]], kind: Callable[[UpstreamSettings], Transport],
) -> None:
    # The busy poll (http/busypoll.py) reads this count to stop spinning when the worker
    # is busy: a request Azure has not answered yet (the long part of a JSON request)
    # holds its connection on either transport, the aiohttp one (SOCKS proxies) too.
    arrived = asyncio.Event()
    go = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await go.wait()
        writer.write(answer([]))
        await writer.drain()

    client = kind(UpstreamSettings())
    sending = asyncio.ensure_future(client.send(get(await raw_server(slow))))
    await arrived.wait()
    assert client.connections_in_use() == 1
    go.set()
    response = await sending
    assert await response.read(10) == b"{}"
    response.close()
    assert client.connections_in_use() == 0
    # One that fails (a port nobody listens on) leaves no count behind.
    dead = reserved_socket()
    try:
        with pytest.raises(UpstreamUnreachable):
            await client.send(get(f"http://127.0.0.1:{dead.getsockname()[1]}/"))
    finally:
        dead.close()
    assert client.connections_in_use() == 0
    await client.close()
