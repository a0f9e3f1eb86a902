"""Answer heads whose framing the HTTP/1.1 clients (FastTransport; aiohttp's, which serves
the upstream proxies) read otherwise than their parser, or passed on: a Transfer-Encoding
other than chunked alone, and a final status outside 200-599. Each is refused at once
(a 502 through the gateway); before, `gzip, chunked` passed the gzip'd bytes as a 200's
body, `chunked, gzip` and `xchunked` (read by the parser to the close) waited for the
read timeout (600 s by default) on a server that kept the connection open, status 000
waited so too (fast: taken for an interim answer) or was a 500 of the gateway's own
server (aiohttp), and 600 or 999 went to the client as its status. Raw servers on
loopback."""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest

from azure_openai_proxy.errors import UpstreamInvalidAnswer
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import AiohttpTransport, Transport, UpstreamRequest
from tests.unit.test_fasttransport import serve_raw

_ZIPPED = gzip.compress(b'{"ok": true}')
_CHUNKED = b"%x\r\n" % len(_ZIPPED) + _ZIPPED + b"\r\n0\r\n\r\n"


async def _ask(answer: bytes, client: str = "fast") -> tuple[int, bytes]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()  # the connection stays open

    url, server, _ = await serve_raw(handler)
    settings = UpstreamSettings(read_timeout=5)
    transport: Transport = (
        FastTransport(settings) if client == "fast" else AiohttpTransport(settings))
    try:
        response = await transport.send(UpstreamRequest("GET", url + "/x", {}))
        try:
            return response.status, await response.read(1 << 20)
        finally:
            response.close()
    finally:
        await transport.close()
        server.close()


@pytest.mark.parametrize("codings", [
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: xchunked",
    b"Transfer-Encoding: chunked;q=1",
    # llhttp reads it to the close too, though its first field said chunked (revh1:
    # aiohttp relayed the chunks' framing as a 200's body, fast waited for the close).
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
])
@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_a_transfer_coding_other_than_chunked_is_refused_at_once(
        codings: bytes, client: str) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamInvalidAnswer) as caught:
        await _ask(b"HTTP/1.1 200 OK\r\n" + codings + b"\r\n\r\n" + _CHUNKED, client)
    assert "transfer-coding the gateway cannot decode" in caught.value.message
    assert caught.value.status == 502
    assert time.monotonic() - started < 2


async def test_chunked_then_a_tab_is_refused_at_once() -> None:
    """llhttp does not read `chunked` then a tab as chunked (to the close instead), and
    fast's check stripped the tab (revh1). aiohttp strips it from the value it shows:
    its client cannot tell, and still relays the chunks' framing (not fixed)."""
    started = time.monotonic()
    with pytest.raises(UpstreamInvalidAnswer, match="transfer-coding"):
        await _ask(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n" + _CHUNKED)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("codings", [b"chunked", b"Chunked", b"CHUNKED", b" chunked",
                                     b"\tchunked  "])
@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_chunked_alone_in_any_case_is_read(codings: bytes, client: str) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding:" + codings + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert await _ask(answer, client) == (200, b"hello")


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_a_status_http_does_not_have_is_refused(status: bytes, client: str) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamInvalidAnswer) as caught:
        await _ask(b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nok", client)
    assert f"status {status.decode()}, not a final HTTP status" in caught.value.message
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [b"200", b"429", b"599"])
async def test_statuses_http_has_are_answers(status: bytes) -> None:
    assert await _ask(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 2\r\n\r\nok") == (
        int(status), b"ok")
