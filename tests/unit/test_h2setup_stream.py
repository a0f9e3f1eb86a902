"""A stream's set-up in fewer calls (issue 15): the HEADERS and DATA frames `open_stream`
writes inline are the bytes `headers_frames` and `data_frame` make (the general path),
whatever the block's and the body's sizes; and a stream's head read from the same
header block on several streams of one connection gives each its own, equal headers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from tests.e2e.h2raw import frame
from tests.unit.test_h2_connection import _Wire

# nginx 1.22's answer head as the paced upstream sent it before it sent ids of its own:
# :status 200, then server, date and content-type as literals with incremental indexing,
# apim-request-id and x-ms-region without indexing, all Huffman coded.
NGINX = bytes.fromhex(
    "887689aa6355e580ae212e1f6196d07abe9403aa5f29141004e28205c0bb719754c5a37f5f8c497ca5"
    "82f72d495909b0a3a7008b1d66a56b0bdad2a12b1a4f8a6c618c446645ab190b270088f2b5285ac2cc"
    "63d586c034254e1bbf")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _connection(loop: asyncio.AbstractEventLoop, max_frame: int) -> tuple[_H2Connection, _Wire]:
    conn = _H2Connection(loop, "upstream.test", 600.0)
    wire = _Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(frame(4, 0, 0, (5).to_bytes(2, "big") + max_frame.to_bytes(4, "big")))
    return conn, wire


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40_000), st.integers(0, 20_000), st.sampled_from([16384, 20000]),
       st.integers(0, 3))
def test_open_streams_bytes_as_the_general_path(block_size: int, body_size: int,
                                               max_frame: int, earlier: int) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn, wire = _connection(loop, max_frame)
        for _ in range(earlier):  # a later stream id
            conn.open_stream(b"\x82", True)
        block, body = bytes(range(256)) * (block_size // 256) + b"\x82", b"b" * body_size
        start = len(wire.written)
        if conn.fits(body):
            stream = conn.open_stream(block, True, body)
            expected = (f.headers_frames(stream.sid, block, not body, max_frame)
                        + (f.data_frame(stream.sid, body, True) if body else b""))
        else:
            stream = conn.open_stream(block, end_stream=not body)
            expected = f.headers_frames(stream.sid, block, not body, max_frame)
        assert bytes(wire.written[start:]) == expected
        assert stream.sent_end == (conn.fits(body) or not body)
    finally:
        loop.close()


def test_the_same_answer_head_on_many_streams(loop: asyncio.AbstractEventLoop) -> None:
    """The same block on four streams: every stream gets the status and the same
    headers, each in a dict of its own (`compressed` edits a stream's)."""
    conn, _ = _connection(loop, 16384)
    streams = [conn.open_stream(b"\x82", True) for _ in range(4)]
    for stream in streams:
        conn.data_received(frame(1, f.END_HEADERS, stream.sid, NGINX))
    heads = [stream.headers for stream in streams]
    assert all(stream.started and stream.status == 200 for stream in streams)
    assert all(dict(head) == dict(heads[0]) for head in heads)
    assert heads[0]["x-ms-region"] == "East US" and heads[0]["server"] == "nginx/1.22.1"
    assert len({id(head) for head in heads}) == 4
    del heads[0]["server"]
    assert "server" in heads[1]
