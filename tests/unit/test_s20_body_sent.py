"""An upload Azure never received whole (its connection reset mid-way, or its client
left while it was still going out) is neither answered nor billed: each transport counts
`body_sent` on the request's record only once the body's last byte is handed over, and
`note_unanswered` estimates a request only then (session 20's review of issue 13: the
count was of the head, so a transcription whose audio was cut short was billed). Real
transports against loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import AiohttpTransport, Transport, UpstreamRequest
from tests.e2e.h2server import BIG, ScriptedH2Server
from tests.waiting import until_async

_PIECE = 256 * 1024
_UPLOAD = 64 * _PIECE  # 16 MiB: far past what loopback's socket buffers hold


def _record() -> RequestRecord:
    return RequestRecord("r1", "POST", route="audio/speech")


def _upload(size: int = _UPLOAD) -> Callable[[], AsyncIterator[bytes]]:
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(size // _PIECE):
            yield b"x" * _PIECE

    return pieces


def _request(url: str, record: RequestRecord, size: int = _UPLOAD) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-length": str(size)}, _upload(size), record)


@contextlib.asynccontextmanager
async def _upstream(reset_after: int | None) -> AsyncIterator[tuple[str, list[int]]]:
    """A listener that reads a request; past `reset_after` bytes it resets the
    connection (RST: SO_LINGER 0), else it reads everything and never answers. Yields
    its URL and the bytes it read (a running count, one per connection)."""
    read: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        read.append(0)
        while data := await reader.read(65536):
            read[-1] += len(data)
            if reset_after is not None and read[-1] >= reset_after:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x", read
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()


async def _left(transport: Transport, request: UpstreamRequest,
                reached: Callable[[], bool]) -> None:
    """Send `request` until `reached()`, then cancel it (its client left)."""
    task = asyncio.ensure_future(transport.send(request))
    await until_async(reached, 5, "the upload never got there")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture(params=[
    pytest.param(lambda: FastTransport(UpstreamSettings(read_timeout=30)), id="fast"),
    pytest.param(lambda: AiohttpTransport(UpstreamSettings(read_timeout=30)), id="aiohttp"),
])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    made: Transport = request.param()
    yield made
    await made.close()


async def test_an_upload_reset_mid_way_was_sent_but_not_whole(transport: Transport) -> None:
    await reset_mid_way(transport, _request)


async def reset_mid_way(transport: Transport,
                        request: Callable[[str, RequestRecord], UpstreamRequest]) -> None:
    """`request` (to a URL, with a record) reset by the upstream after 1 MiB: sent, not
    whole, and not billed."""
    record = _record()
    async with _upstream(reset_after=1024 * 1024) as (url, _):
        with pytest.raises(UpstreamError) as caught:
            await transport.send(request(url, record))
    assert caught.value.request_sent  # its head went: not tried elsewhere
    note_unanswered(record, {"input": "x" * 100}, "audio/speech")
    assert record.usage is None  # on main: 100 characters, billed
    assert (record.sent, record.body_sent) == (1, 0)


async def test_an_upload_left_mid_way_was_not_whole(transport: Transport) -> None:
    """Its client left while the body was going out (the upstream stopped reading)."""
    record = _record()
    async with _upstream(reset_after=None) as (url, read):
        await _left(transport, _request(url, record, 4 * _UPLOAD),
                    lambda: bool(read) and read[0] > _PIECE)
    assert (record.sent, record.body_sent) == (1, 0)


async def test_an_upload_received_whole_and_never_answered_is_estimated(
        transport: Transport) -> None:
    record = _record()
    async with _upstream(reset_after=None) as (url, read):
        await _left(transport, _request(url, record, 4 * _PIECE),
                    lambda: bool(read) and read[0] >= 4 * _PIECE and record.body_sent > 0)
    assert (record.sent, record.body_sent) == (1, 1)
    note_unanswered(record, {"input": "x" * 100}, "audio/speech")
    assert record.usage is not None
    assert (record.usage["characters"], record.usage["estimated"]) == (100, True)


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "bytes"])
async def test_h2_a_body_answered_once_whole_counts_whole(streamed: bool) -> None:
    server = ScriptedH2Server()
    await server.start()
    transport = H2Transport(UpstreamSettings(http2=True))
    record = _record()
    size = 4 * _PIECE if streamed else 1000
    try:
        response = await transport.send(UpstreamRequest(
            "POST", server.url + "/echo", {}, _upload(size) if streamed else b"y" * size,
            record))
        assert await response.read(100) == b"%d" % size  # `/echo`: once it had it all
        response.close()
        assert (record.sent, record.body_sent) == (1, 1)
    finally:
        await transport.close()
        await server.stop()


async def test_h2_an_upload_cut_mid_way_was_sent_but_not_whole() -> None:
    """The server credits nothing back (its windows shut) and the connection goes while
    the upload waits for room: HEADERS went, END_STREAM never did."""
    server = ScriptedH2Server(ack_delay=60)
    await server.start()
    transport = H2Transport(UpstreamSettings(http2=True, read_timeout=30))
    record = _record()
    try:
        task = asyncio.ensure_future(transport.send(
            UpstreamRequest("POST", server.url + "/echo", {}, _upload(BIG + 4 * _PIECE), record)))
        await until_async(lambda: bool(server.protocols) and bool(server.protocols[0].received),
                          5, "no upload")
        server.protocols[0].transport.abort()
        with pytest.raises(UpstreamError):
            await task
        assert (record.sent, record.body_sent) == (1, 0)
    finally:
        await transport.close()
        await server.stop()
