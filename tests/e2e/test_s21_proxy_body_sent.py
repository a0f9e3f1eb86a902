"""A bytes body through an upstream proxy (the gateway's client for it, through a real
pproxy) counts whole (`record.body_sent`) only once it has all been written, as a
streamed one does: it was counted with its head, so a JSON body the connection lost
mid-way was estimated and billed as if Azure had it (session 20's review). Loopback
servers only.

A SOCKS proxy's client is aiohttp's; an HTTP proxy's is FastTransport (session 28),
which counts a bytes body the loop still buffers past its high-water mark once that
buffer drained below it (the review of session 28: it counted it with its head)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.transport import Transport, UpstreamRequest
from tests.processes import pproxy, running
from tests.unit.test_s20_body_sent import _left, _record, _upstream

_BODY = b'{"input": "' + b"x" * (64 * 1024 * 1024) + b'"}'  # far past every buffer on the way


@pytest.fixture(params=["http", "socks5"])
async def proxied(request: pytest.FixtureRequest, reserve_port: Callable[[], int]
                  ) -> AsyncIterator[Transport]:
    """The gateway's transport through a pproxy of the scheme."""
    port = reserve_port()
    url = f"{request.param}://127.0.0.1:{port}"
    key = "socks_proxy" if request.param == "socks5" else "http_proxy"
    transport = transport_for(UpstreamSettings(read_timeout=30, **{key: url}))
    with running(pproxy(url), port=port):
        yield transport
        await transport.close()


async def test_a_bytes_body_cut_mid_way_was_sent_but_not_whole(
        proxied: Transport) -> None:
    record = _record()
    async with _upstream(reset_after=1024 * 1024) as (url, read):
        with pytest.raises(UpstreamError) as caught:
            await proxied.send(UpstreamRequest("POST", url, {}, _BODY, record))
        assert 0 < read[0] < len(_BODY)  # it went through the proxy, and not all of it
    assert caught.value.request_sent
    assert (record.sent, record.body_sent) == (1, 0)  # on main: (1, 1)


async def test_a_bytes_body_received_whole_and_never_answered_was_whole(
        proxied: Transport) -> None:
    record = _record()
    body = b'{"input": "hello"}'
    async with _upstream(reset_after=None) as (url, read):
        await _left(proxied, UpstreamRequest("POST", url, {}, body, record),
                    lambda: bool(read) and read[0] > len(body) and record.body_sent > 0)
    assert (record.sent, record.body_sent) == (1, 1)


async def test_a_bytes_body_goes_with_its_length_as_before(proxied: Transport) -> None:
    """Written as one piece, it keeps its Content-Length (not chunked), and an answered
    request counts whole."""
    received: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    record = _record()
    body = b'{"input": "hello"}'
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
        response = await proxied.send(UpstreamRequest(
            "POST", url, {"content-type": "application/json"}, body, record))
        assert await response.read(10) == b"ok"
        response.close()
    finally:
        server.close()
    [request] = received
    assert request.endswith(b"\r\n\r\n" + body)
    assert b"content-length: 18\r\n" in request.lower()
    assert b"content-type: application/json\r\n" in request.lower()
    assert request.lower().count(b"content-type") == 1
    assert b"transfer-encoding" not in request.lower()
    assert (record.sent, record.body_sent) == (1, 1)
