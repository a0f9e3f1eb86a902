"""A chunked answer's trailer through FastTransport: fields after the last chunk are not
kept (they grew a list ~15 bytes for each byte the server sent, for as long as it went
on: 96 MiB of fields in 4 s made 1.4 GB), and a pushed answer whose server sends bytes
that are no body (endless trailer fields) times out after read_timeout as a pulled one
does (each read counted as progress: held for ever). Raw servers on loopback."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.unit.test_fasttransport import serve_raw

_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
_FIELDS = 200_000


async def test_trailer_fields_are_read_past_not_kept() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_HEAD + b"x-t: y\r\n" * _FIELDS + b"\r\n")  # a trailer of 1.6 MB
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        await writer.drain()
        await reader.read()

    url, server, connections = await serve_raw(handler)
    transport = FastTransport(UpstreamSettings(read_timeout=10))
    try:
        tracemalloc.start()
        response = await transport.send(UpstreamRequest("GET", url + "/x", {}))
        assert await response.read(1024) == b"hello"
        response.close()
        # What the connection holds once the answer is read (the server's buffers, in
        # this process too, are not counted): on main, every field, ~30 MB.
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*upstream/fast/connection.py")])
        tracemalloc.stop()
        assert sum(stat.size for stat in held.statistics("filename")) < 256 * 1024
        # The answer ended whole: its connection serves the next request.
        response = await transport.send(UpstreamRequest("GET", url + "/x", {}))
        assert await response.read(1024) == b"next"
        response.close()
        assert len(connections) == 1
    finally:
        tracemalloc.stop()
        await transport.close()
        server.close()


class _Sink:
    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.failed: Exception | None = None
        self.over = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.fed.append(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        self.over.set()

    def fail(self, error: Exception) -> None:
        self.failed = error
        self.over.set()


async def test_a_pushed_answer_whose_server_sends_no_body_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_HEAD)
        for _ in range(400):  # trailer fields, a read each, never a blank line: 20 s
            await asyncio.sleep(0.05)
            writer.write(b"x-t: y\r\n")
            await writer.drain()

    url, server, _ = await serve_raw(handler)
    transport = FastTransport(UpstreamSettings(read_timeout=0.5))
    sink = _Sink()
    try:
        response = await transport.send(UpstreamRequest("GET", url + "/x", {}))
        started = time.monotonic()
        response.relay(sink)
        await asyncio.wait_for(sink.over.wait(), 5)  # on main: never over
        assert isinstance(sink.failed, UpstreamTimeout), sink.failed
        assert time.monotonic() - started < 2
        assert b"".join(sink.fed) == b"hello"
        response.close()
    finally:
        await transport.close()
        server.close()
