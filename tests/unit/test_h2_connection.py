"""`_H2Connection` fed frames by hand (no socket): what a hostile or broken server's
frames do to the connection (issue 15's review). A protocol violation ends the
connection with a GOAWAY carrying the right code, and its streams fail with Upstream
errors; nothing it sends grows without bound."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import _Stream
from tests.e2e.h2raw import frame


class _Wire:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def get_write_buffer_size(self) -> int:
        return self.buffered + len(self.written)

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        out, data = [], bytes(self.written)
        pos = len(f.PREFACE) if data.startswith(f.PREFACE) else 0
        while pos + 9 <= len(data):
            size = int.from_bytes(data[pos:pos + 3], "big")
            sid = int.from_bytes(data[pos + 5:pos + 9], "big")
            out.append((data[pos + 3], data[pos + 4], sid, data[pos + 9:pos + 9 + size]))
            pos += 9 + size
        return out

    def goaway(self) -> int | None:
        """The GOAWAY's error code, if one was written."""
        codes = [struct.unpack(">II", p[:8])[1] for k, _, _, p in self.frames() if k == 7]
        return codes[-1] if codes else None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _connection(loop: asyncio.AbstractEventLoop) -> tuple[_H2Connection, _Wire]:
    conn = _H2Connection(loop, "upstream.test", 600.0)
    wire = _Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(frame(4, 0, 0))  # the server's SETTINGS
    return conn, wire


def _request(conn: _H2Connection) -> _Stream:
    return conn.open_stream(b"\x82", end_stream=True)


def _failed(stream: _Stream) -> bool:
    return stream.ended and isinstance(stream.error, UpstreamError)


def test_empty_continuations_without_end_end_the_connection(
        loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frame(1, 0, 1, b"\x88"))  # HEADERS, no END_HEADERS
    conn.data_received(frame(9, 0, 1) * 10_000)
    assert conn.closed and wire.goaway() == f.ENHANCE_YOUR_CALM
    assert _failed(stream)
    conn.close()


@pytest.mark.parametrize("frames", [
    frame(0, 1, 1, b"x"),  # DATA with END_STREAM, no HEADERS before
    frame(0, 1, 1),  # the same, empty
    frame(0, 0, 1, b"x"),  # DATA before HEADERS, the stream still open
    frame(1, 5, 1, b"\x0d\x03103"),  # 103 Early Hints with END_STREAM: no final answer
])
def test_an_answer_without_a_head_fails_its_stream(
        loop: asyncio.AbstractEventLoop, frames: bytes) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frames)
    assert _failed(stream) and not stream.started
    assert not conn.closed and not conn.streams  # a stream error: the connection goes on
    assert (3, 0, 1, struct.pack(">I", f.PROTOCOL_ERROR)) in wire.frames()
    conn.close()


def _answered(conn: _H2Connection) -> _Stream:
    stream = _request(conn)
    conn.data_received(frame(1, 4, stream.sid, b"\x88"))  # :status 200
    assert stream.started
    return stream


def test_data_past_the_stream_window_is_a_flow_control_error(
        loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = _connection(loop)
    stream = _answered(conn)  # nobody reads it: its window is not credited back
    chunk = frame(0, 0, stream.sid, b"z" * 16384)
    conn.data_received(chunk * (f.STREAM_WINDOW // 16384))  # the whole window: allowed
    assert not conn.closed and sum(map(len, stream.body)) == f.STREAM_WINDOW
    conn.data_received(chunk)  # past it
    assert conn.closed and wire.goaway() == f.FLOW_CONTROL_ERROR
    assert _failed(stream)


@pytest.mark.parametrize("ask", [frame(6, 0, 0, b"12345678"), frame(4, 0, 0)])
def test_acks_asked_for_by_a_server_not_reading_are_bounded(
        loop: asyncio.AbstractEventLoop, ask: bytes) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.pause_writing()  # the server does not read
    before = len(wire.written)
    conn.data_received(ask * 100_000)
    assert conn.closed and wire.closed and wire.goaway() == f.ENHANCE_YOUR_CALM
    assert len(wire.written) - before < 40_000  # not 100,000 acks
    assert _failed(stream)


def test_acks_are_written_while_the_server_reads(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = _connection(loop)
    conn.data_received(frame(6, 0, 0, b"12345678") * 5000)
    assert not conn.closed
    assert len([k for k, flags, _, _ in wire.frames() if k == 6 and flags == 1]) == 5000
    conn.close()
