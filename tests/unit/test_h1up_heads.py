"""Answer heads whose framing FastTransport read otherwise than llhttp, which parses the
body: a Transfer-Encoding other than chunked alone, and a status under 100. Each is
refused at once (a 502 through the gateway); before, `gzip, chunked` passed the gzip'd
bytes as a 200's body, and `chunked, gzip`, `xchunked` (read by llhttp to the close) or
status 000 (taken for an interim answer) waited for the read timeout, 600 s by default,
on a server that kept the connection open. Raw servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest

from azure_openai_proxy.errors import UpstreamInvalidAnswer, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.unit.test_fasttransport import serve_raw

_ZIPPED = gzip.compress(b'{"ok": true}')
_CHUNKED = b"%x\r\n" % len(_ZIPPED) + _ZIPPED + b"\r\n0\r\n\r\n"


async def _ask(answer: bytes) -> tuple[int, bytes]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()  # the connection stays open

    url, server, _ = await serve_raw(handler)
    transport = FastTransport(UpstreamSettings(read_timeout=5))
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
])
async def test_a_transfer_coding_other_than_chunked_is_refused_at_once(codings: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamInvalidAnswer) as caught:
        await _ask(b"HTTP/1.1 200 OK\r\n" + codings + b"\r\n\r\n" + _CHUNKED)
    assert "transfer-coding the gateway cannot decode" in caught.value.message
    assert caught.value.status == 502
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("codings", [b"chunked", b"Chunked", b"CHUNKED", b" chunked"])
async def test_chunked_alone_in_any_case_is_read(codings: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding:" + codings + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert await _ask(answer) == (200, b"hello")


@pytest.mark.parametrize("status", [b"000", b"099"])
async def test_a_status_under_100_is_not_taken_for_an_interim_answer(status: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnreachable) as caught:
        await _ask(b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nok")
    assert f"status is {status.decode()}" in caught.value.message
    assert time.monotonic() - started < 2
