"""A decompression bomb from upstream (session 23's adversarial run, branch advstream):
the gateway never asks for a compressed answer but inflates a gzip or deflate one, and
each read was inflated whole at once, before any limit was looked at: 200 KiB of gzip'd
zeros peaked at ~250 MiB per request. An answer inflating past `INFLATION_MOST` times
what came of it (after a first MiB) is refused now: a 502 naming it over HTTP/1.1, a
failed stream over HTTP/2, memory bounded."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import INFLATION_MOST, UpstreamRequest
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, raw_upstream
from tests.e2e.h2raw import RawH2Server, frame, head_block
from tests.e2e.pools import sdk
from tests.e2e.test_advstream_answers import CHAT
from tests.support import serve

BOMB = gzip.compress(b"\0" * (200 << 20), 9)  # ~200 KiB


def script(request: bytes) -> Sequence[Piece]:
    body = BOMB if b'"bomb"' in request else gzip.compress(CHAT)
    return [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body]


def test_a_gzip_bomb_is_a_502_in_bounded_memory() -> None:
    from openai import InternalServerError

    with raw_upstream(script) as upstream, serve(
            lambda: create_app(gateway_settings(upstream.url))) as gateway:
        client = sdk(gateway)
        tracemalloc.start()
        try:
            with pytest.raises(InternalServerError) as caught:
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "bomb"}])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        error = caught.value.response.json()["error"]
        assert caught.value.response.status_code == 502
        assert error["code"] == "upstream_invalid_answer"
        assert f"more than {INFLATION_MOST} times" in error["message"]
        assert peak < 48 << 20  # on main: ~400 MiB (the answer inflated, then read whole)
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "fine"}])
        assert answer.choices[0].message.content == "hi"  # gzip'd, served


async def test_over_http2_a_bomb_fails_its_stream_in_bounded_memory() -> None:
    bomb = zlib.compress(b"\0" * (64 << 20), 9)

    def script(sid: int) -> bytes:
        body = bomb if sid == 1 else zlib.compress(b"hello")
        return (frame(1, 4, sid, head_block((":status", "200"), ("content-encoding", "deflate")))
                + b"".join(frame(0, 0, sid, body[at:at + 16384])
                           for at in range(0, len(body), 16384)) + frame(0, 1, sid))

    server = RawH2Server(script)
    url = await server.start()
    transport = H2Transport(UpstreamSettings(http2=True, read_timeout=2.0, connect_timeout=2.0))
    tracemalloc.start()
    try:
        answer = await transport.send(UpstreamRequest("GET", url + "/x", {}))
        with pytest.raises(UpstreamError):
            await answer.read(128 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    answer.close()
    assert peak < 16 << 20  # on main: 64 MiB and more
    answer = await transport.send(UpstreamRequest("GET", url + "/x", {}))
    assert await answer.read(1000) == b"hello"
    answer.close()
    await transport.close()
    await server.stop()
