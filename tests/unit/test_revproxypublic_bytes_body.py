"""FastTransport counts a bytes body whole (`record.body_sent`) once the event loop's
write buffer holds less than its high-water mark, as a streamed body's last piece and
aiohttp's bytes body are: a long JSON body the connection lost mid-way was counted with
its head, so it was estimated and billed as if Azure had it. Through an HTTP proxy this
was aiohttp's counting until session 28 (tests/e2e/test_s21_proxy_body_sent.py's http
case was made a strict xfail); direct connections had it too. Loopback servers only.
A body the socket takes at once (the usual request) still counts with its head."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvloop

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.unit.test_s20_body_sent import _UPLOAD, _left, _record, _upstream, reset_mid_way


def _body(size: int = _UPLOAD) -> bytes:
    """A JSON body of `size` bytes and more (16 MiB: far past loopback's buffers), built
    in the test that sends it, not held for the whole suite."""
    return b'{"input": "' + b"x" * size + b'"}'



@pytest.fixture
async def fast() -> AsyncIterator[FastTransport]:
    transport = FastTransport(UpstreamSettings(read_timeout=30))
    yield transport
    await transport.close()


async def test_a_bytes_body_reset_mid_way_was_sent_but_not_whole(fast: FastTransport) -> None:
    # Cut after 1 MiB: the receiver's window may have grown to some MiB by then (tcp_rmem's
    # most is 32 MiB here), so far more, as test_s21_proxy_body_sent's.
    await reset_mid_way(fast, lambda url, record: UpstreamRequest(
        "POST", url, {}, _body(4 * _UPLOAD), record))


async def test_a_bytes_body_left_mid_way_was_not_whole(fast: FastTransport) -> None:
    """Its client left while the body was going out (the upstream stopped reading past
    1 MiB, so the rest stays in the loop's buffer whatever the machine's speed)."""
    record = _record()
    read = [0]
    done = asyncio.Event()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while read[0] < 1024 * 1024 and (data := await reader.read(65536)):
            read[0] += len(data)
        await done.wait()
        writer.transport.abort()

    server = await asyncio.start_server(stalls, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
    try:
        await _left(fast, UpstreamRequest("POST", url, {}, _body(), record),
                    lambda: read[0] >= 1024 * 1024)
    finally:
        done.set()
        server.close()
    assert (record.sent, record.body_sent) == (1, 0)
    assert fast.connections_in_use() == 0


async def test_a_long_bytes_body_received_whole_and_never_answered_is_whole(
        fast: FastTransport) -> None:
    record = _record()
    async with _upstream(reset_after=None) as (url, read):
        body = _body()
        await _left(fast, UpstreamRequest("POST", url, {}, body, record),
                    lambda: bool(read) and read[0] >= len(body) and record.body_sent > 0)
    assert (record.sent, record.body_sent) == (1, 1)


async def test_a_short_bytes_body_counts_with_its_head(fast: FastTransport) -> None:
    record = _record()
    async with _upstream(reset_after=None) as (url, read):
        await _left(fast, UpstreamRequest("POST", url, {}, b'{"input": "hi"}', record),
                    lambda: bool(read) and record.body_sent > 0)
    assert (record.sent, record.body_sent) == (1, 1)


def test_on_uvloop_the_gateways_loop_too() -> None:
    """uvloop's transports pause and resume the writer as asyncio's do."""

    async def both() -> None:
        fast = FastTransport(UpstreamSettings(read_timeout=30))
        try:
            await reset_mid_way(fast, lambda url, record: UpstreamRequest(
                "POST", url, {}, _body(4 * _UPLOAD), record))
            await test_a_long_bytes_body_received_whole_and_never_answered_is_whole(fast)
        finally:
            await fast.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(both())
