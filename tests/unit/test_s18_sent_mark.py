"""A request is estimated when it ends unanswered only if it was sent (issue 13, session
18): each transport counts on the request's record (`UpstreamRequest.mark`) when it hands
the request's head to a socket, and `note_unanswered` reads that count. A request that
waited for a pooled connection, or for a connection being opened, and was cancelled
there (its client left) was never written: nothing to estimate. Real transports against
loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.gateway.unanswered import note_unanswered
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import (
    AiohttpTransport,
    Transport,
    UpstreamRequest,
    UpstreamResponse,
)
from tests.e2e.h2server import ScriptedH2Server
from tests.unit.test_upstream_pool import HeldUpstream, held  # noqa: F401  (fixture)
from tests.waiting import until_async

CHAT = {"model": "gpt-4o", "max_tokens": 50,
        "messages": [{"role": "user", "content": "word " * 40}]}


def _record() -> RequestRecord:
    record = RequestRecord("r1", "POST", route="chat/completions")
    record.attempts = 1  # an attempt was begun (the balancer's lease): it may wait
    return record


def test_an_unanswered_request_is_estimated_only_when_it_was_sent() -> None:
    queued = _record()  # its client left while it waited for a connection
    note_unanswered(queued, CHAT, "chat/completions")
    assert queued.usage is None
    sent = _record()
    sent.sent = sent.body_sent = 1  # written whole: Azure may bill it
    note_unanswered(sent, CHAT, "chat/completions")
    assert sent.usage is not None and sent.usage["completion_tokens"] == 50


def _request(url: str, record: RequestRecord, body: Any = b"{}") -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json"}, body, record)


async def _cancelled(send: Coroutine[Any, Any, UpstreamResponse],
                     reached: Callable[[], bool]) -> None:
    """Run `send` until `reached()`, then cancel it (the client left)."""
    task = asyncio.ensure_future(send)
    await until_async(reached, 5, "the request never got there")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _queued_behind(transport: Transport, url: str, held: HeldUpstream,  # noqa: F811
                         waiting: Callable[[], bool]) -> None:
    """A request holds the one connection (sent, unanswered); a second waits for it
    and is cancelled: the first is counted sent, the second not."""
    first, second = _record(), _record()
    holding = asyncio.ensure_future(transport.send(_request(url, first)))
    await held.arrived.wait()
    await _cancelled(transport.send(_request(url, second)), waiting)
    assert first.sent == 1
    assert second.sent == 0
    assert held.requests == 1
    held.release.set()
    (await holding).close()


async def test_fast_a_request_cancelled_in_the_pools_queue_was_not_sent(
        held: HeldUpstream) -> None:  # noqa: F811
    transport = FastTransport(UpstreamSettings(pool_size=1, pool_timeout=30))
    try:
        await _queued_behind(transport, held.url, held,
                             lambda: any(p.waiters for p in transport._pools.values()))
    finally:
        await transport.close()


async def test_aiohttp_a_request_cancelled_in_the_pools_queue_was_not_sent(
        held: HeldUpstream) -> None:  # noqa: F811
    transport = AiohttpTransport(UpstreamSettings(pool_size=1, pool_timeout=30))
    try:
        # Two in use, one connection: the second is in aiohttp's queue for it.
        await _queued_behind(transport, held.url, held,
                             lambda: transport.connections_in_use() == 2)
    finally:
        await transport.close()


async def test_fast_a_streamed_body_counts_as_sent_from_its_head(
        held: HeldUpstream) -> None:  # noqa: F811
    """An upload's head is written before its body is read: cancelled while the body
    is on its way, Azure has a request (it may act on it)."""
    more = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"{"
        await more.wait()  # the rest never comes
        yield b"}"

    transport = FastTransport(UpstreamSettings())
    record = _record()
    try:
        await _cancelled(transport.send(_request(held.url, record, pieces)),
                         lambda: record.sent > 0)
        assert record.sent == 1
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def _silent() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A listener that accepts and reads, never answering (no TLS handshake, no head)."""
    got: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(65536):
            got.append(data)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", got
    finally:
        for writer in writers:
            writer.close()
        server.close()


@pytest.mark.parametrize("make", [
    lambda: FastTransport(UpstreamSettings(connect_timeout=30)),
    lambda: H2Transport(UpstreamSettings(connect_timeout=30)),
    lambda: AiohttpTransport(UpstreamSettings(connect_timeout=30)),
], ids=["fast", "h2", "aiohttp"])
async def test_a_request_cancelled_during_the_tls_handshake_was_not_sent(
        make: Callable[[], Transport]) -> None:
    transport = make()
    record = _record()
    try:
        async with _silent() as (address, got):
            await _cancelled(transport.send(_request(f"https://{address}/x", record)),
                             lambda: bool(got))  # its TLS hello arrived
        assert record.sent == 0
    finally:
        await transport.close()


@pytest.mark.parametrize("make", [
    lambda: FastTransport(UpstreamSettings()),
    lambda: H2Transport(UpstreamSettings(http2=True)),
    lambda: AiohttpTransport(UpstreamSettings()),
], ids=["fast", "h2c", "aiohttp"])
async def test_a_request_whose_connect_is_refused_was_not_sent(
        make: Callable[[], Transport]) -> None:
    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    transport = make()
    record = _record()
    try:
        with pytest.raises(UpstreamUnreachable) as caught:
            await transport.send(_request(f"http://127.0.0.1:{port}/x", record))
        assert caught.value.request_sent is False
        assert record.sent == 0
    finally:
        await transport.close()


@pytest.fixture
async def h2server() -> AsyncIterator[ScriptedH2Server]:
    script = ScriptedH2Server(max_streams=1)
    await script.start()
    yield script
    await script.stop()


async def test_h2_a_request_cancelled_waiting_for_a_stream_was_not_sent(
        h2server: ScriptedH2Server) -> None:
    transport = H2Transport(UpstreamSettings(http2=True, pool_size=1, pool_timeout=30))
    first, second = _record(), _record()
    try:
        # The one stream the server allows: a head, then nothing (`/stall`).
        holding = await transport.send(_request(h2server.url + "/stall", first))
        await _cancelled(transport.send(_request(h2server.url + "/ok", second)),
                         lambda: any(p.waiters for p in transport._pools.values()))
        assert (first.sent, second.sent) == (1, 0)
        assert [path for _, path in h2server.requests] == ["/stall"]
        holding.close()
    finally:
        await transport.close()


async def test_h2_a_refused_stream_is_not_counted_as_sent(
        h2server: ScriptedH2Server) -> None:
    """REFUSED_STREAM: the server did not act on it (RFC 9113), and it goes again: one
    request sent, not two."""
    transport = H2Transport(UpstreamSettings(http2=True))
    record = _record()
    try:
        response = await transport.send(_request(h2server.url + "/refuse", record))
        assert await response.read(100) == b"hello"
        response.close()
        assert [path for _, path in h2server.requests] == ["/refuse", "/refuse"]
        assert record.sent == 1
    finally:
        await transport.close()
