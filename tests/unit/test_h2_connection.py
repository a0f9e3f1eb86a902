"""`_H2Connection` fed frames by hand (no socket): what a hostile or broken server's
frames do to the connection (issue 15's review). A protocol violation ends the
connection with a GOAWAY carrying the right code, and its streams fail with Upstream
errors; nothing it sends grows without bound."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.connection import _H2Connection, _Refused
from azure_openai_proxy.upstream.h2.stream import _Stream
from azure_openai_proxy.upstream.transport import UpstreamStreamBroken
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


@pytest.mark.parametrize(("frames", "code"), [
    (frame(0, 0, 0, b"x"), f.PROTOCOL_ERROR),  # DATA on the connection
    (frame(0, 0, 5, b"x"), f.PROTOCOL_ERROR),  # DATA on a stream not opened yet
    (frame(0, 0, 2, b"x"), f.PROTOCOL_ERROR),  # DATA on a stream the server opened
    (frame(1, 4, 7, b"\x88"), f.PROTOCOL_ERROR),  # HEADERS on a stream not opened yet
    (frame(3, 0, 0, b"\0\0\0\0"), f.PROTOCOL_ERROR),  # RST_STREAM on the connection
    (frame(8, 0, 0, struct.pack(">I", 0x7FFFFFFF)), f.FLOW_CONTROL_ERROR),  # past 2^31-1
    (frame(8, 0, 1, b"\0\0\0\x0a") + frame(4, 0, 0, struct.pack(">HI", 4, 0x7FFFFFFF)),
     f.FLOW_CONTROL_ERROR),  # a stream's window past 2^31-1 by SETTINGS
    (frame(4, 1, 0, b"\0" * 6), f.FRAME_SIZE_ERROR),  # a SETTINGS ack with a payload
    (frame(4, 0, 1), f.PROTOCOL_ERROR),  # SETTINGS on a stream
    (frame(4, 0, 0, struct.pack(">HI", 2, 2)), f.PROTOCOL_ERROR),  # ENABLE_PUSH 2
    (frame(6, 0, 1, b"12345678"), f.PROTOCOL_ERROR),  # PING on a stream
    (frame(7, 0, 1, b"\0" * 8), f.PROTOCOL_ERROR),  # GOAWAY on a stream
    (frame(1, 0x24, 1, b"\0\0"), f.FRAME_SIZE_ERROR),  # PRIORITY flag, no room for it
])
def test_a_protocol_violation_ends_the_connection(
        loop: asyncio.AbstractEventLoop, frames: bytes, code: int) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frames)
    assert conn.closed and wire.goaway() == code
    goaway = [payload for kind, _, _, payload in wire.frames() if kind == 7]
    assert struct.unpack(">I", goaway[0][:4])[0] == 0  # the server opened no stream
    assert _failed(stream)


@pytest.mark.parametrize(("frames", "code"), [
    (frame(8, 0, 1, b"\0\0\0\0"), f.PROTOCOL_ERROR),  # a zero WINDOW_UPDATE on a stream
    (frame(8, 0, 1, struct.pack(">I", 0x7FFFFFFF)), f.FLOW_CONTROL_ERROR),  # past 2^31-1
    (frame(1, 4, 1, b"\x88") + frame(1, 4, 1, b"\x40\x01a\x01b"), f.PROTOCOL_ERROR),
])  # the last: trailers without END_STREAM
def test_a_stream_error_fails_that_stream_only(
        loop: asyncio.AbstractEventLoop, frames: bytes, code: int) -> None:
    conn, wire = _connection(loop)
    stream = _request(conn)
    conn.data_received(frames)
    assert _failed(stream) and not conn.closed
    assert (3, 0, 1, struct.pack(">I", code)) in wire.frames()
    conn.close()


def test_a_goaway_below_an_answered_stream_fails_it_as_broken(
        loop: asyncio.AbstractEventLoop) -> None:
    conn, _ = _connection(loop)
    stream = _answered(conn)
    conn.data_received(frame(7, 0, 0, struct.pack(">II", 0, 0)))
    assert isinstance(stream.error, UpstreamStreamBroken)


_FRAMES = st.lists(st.tuples(
    st.integers(0, 10),  # the frame type (10: unknown)
    st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x24, 0x29]),  # flags
    st.sampled_from([0, 1, 2, 3, 5, 7]),  # streams: ours 1 and 3, others never opened
    st.one_of(st.binary(max_size=24), st.sampled_from([
        b"\x88", b"\x00\x00\x00\x01", b"\x00\x04\x00\x00\x00\x00", b"12345678",
        b"\x00\x00\x00\x00\x00\x00\x00\x08", b"\x03abcdef"]))),
    max_size=12)


@settings(max_examples=300, deadline=None)
@given(_FRAMES, st.booleans())
def test_no_frames_raise_out_of_the_connection(
        frames: list[tuple[int, int, int, bytes]], paused: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn, _ = _connection(loop)
        streams = [_request(conn), _request(conn)]
        if paused:
            conn.pause_writing()
        conn.data_received(b"".join(frame(*parts) for parts in frames))  # never raises
        for stream in streams:
            assert stream.error is None or isinstance(stream.error, (UpstreamError, _Refused))
            assert stream.ended or stream.sid in conn.streams  # failed, ended, or still open
        if conn.closed:
            assert all(stream.ended for stream in streams)
        conn.close()
    finally:
        loop.close()
