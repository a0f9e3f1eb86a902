"""RFC 9113's rules that stop 27's note listed as not kept: a frame inside a header block
ends the connection (§6.10), and an answer whose field names break §8.2 (upper case, a
byte no token has, HTTP/1.1's connection fields) fails its stream only. `_H2Connection`
fed frames by hand, as in test_h2_connection.py; each test failed before the fix."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest

from azure_openai_proxy.upstream.h2 import frames as f
from tests.e2e.h2raw import frame
from tests.unit.test_h2_connection import _answered, _connection, _failed, _request


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_data_inside_a_header_block_ends_the_connection(
        loop: asyncio.AbstractEventLoop) -> None:
    """Was a stream error (the stream had no head yet), the block's CONTINUATION then
    read on as if nothing had come between."""
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frame(1, 0, 1, b"\x88")  # HEADERS :status 200, no END_HEADERS
                       + frame(0, 0, 1, b"x")  # DATA before the block's end
                       + frame(9, 4, 1))  # CONTINUATION with END_HEADERS
    assert conn.closed and wire.goaway() == f.PROTOCOL_ERROR
    assert _failed(stream)


def test_another_streams_data_inside_a_header_block_ends_the_connection(
        loop: asyncio.AbstractEventLoop) -> None:
    """The answered stream's DATA was relayed while the next stream's block was open."""
    conn, wire = _connection(loop)
    first = _answered(conn)
    second = _request(conn)
    conn.data_received(frame(1, 0, second.sid, b"\x88") + frame(0, 0, first.sid, b"data: x\n\n"))
    assert conn.closed and wire.goaway() == f.PROTOCOL_ERROR
    assert _failed(second) and first.ended


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK: a literal field, its name and value given (no Huffman), not indexed."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


@pytest.mark.parametrize(("name", "value"), [
    (b"Content-Type", b"application/json"),  # upper case
    (b"x-ms region", b"eastus"),  # a space
    (b"x-\xe9", b"1"),  # past ASCII
    (b"connection", b"keep-alive"),
    (b"keep-alive", b"timeout=5"),
    (b"transfer-encoding", b"chunked"),
    (b"upgrade", b"h2c"),
    (b"proxy-connection", b"close"),
])
def test_a_malformed_field_name_fails_its_stream_only(
        loop: asyncio.AbstractEventLoop, name: bytes, value: bytes) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frame(1, 4, stream.sid, b"\x88" + _literal(name, value)))
    assert _failed(stream) and not stream.started
    assert not conn.closed  # a stream error: the connection goes on
    assert (3, 0, stream.sid, struct.pack(">I", f.PROTOCOL_ERROR)) in wire.frames()
    conn.close()


def test_azures_usual_field_names_still_pass(loop: asyncio.AbstractEventLoop) -> None:
    conn, _ = _connection(loop)
    stream = _request(conn)
    fields = [(b"content-type", b"text/event-stream"), (b"apim-request-id", b"abc"),
              (b"x-ratelimit-remaining-tokens", b"100"), (b"azureml-model-session", b"d-1"),
              (b"x-ms-region", b"East US"), (b"strict-transport-security", b"max-age=1"),
              (b"te", b"trailers")]
    conn.data_received(frame(1, 4, stream.sid, b"\x88" + b"".join(
        _literal(name, value) for name, value in fields)))
    assert stream.started and not stream.ended and not conn.closed
    conn.close()


def test_the_good_names_cache_holds_no_long_names_and_empties_when_full() -> None:
    """Review of 0c8ff5b: bounded by count only, 1,024 names of ~64 KB each (a head's
    size) pinned ~64 MB for the process's life, and a full cache was never emptied."""
    from azure_openai_proxy.upstream.h2 import headers
    from azure_openai_proxy.upstream.h2.frames import MAX_HEAD_BYTES

    headers._GOOD_NAMES.clear()
    for number in range(headers._GOOD_NAMES_MAX):
        name = b"x-%05d-" % number + b"a" * (MAX_HEAD_BYTES - 200)
        headers.read_head([(b":status", b"200"), (name, b"1")])
    assert sum(len(name) for name in headers._GOOD_NAMES) < 1 << 16
    for number in range(headers._GOOD_NAMES_MAX + 5):  # short invented names
        headers.read_head([(b":status", b"200"), (b"x-%d" % number, b"1")])
    assert len(headers._GOOD_NAMES) <= headers._GOOD_NAMES_MAX
    headers.read_head([(b":status", b"200"), (b"content-type", b"text/plain")])
    assert b"content-type" in headers._GOOD_NAMES
