"""Issue 15's second review of the HTTP/2 upstream: `_H2Connection` and the transport's
body writer fed by hand (no socket), one test per bug found, each failing before its fix."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator

import pytest

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.upstream.h2 import _send, watch
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import _Stream
from tests.e2e.h2raw import frame
from tests.unit.test_h2_connection import _Wire


class _Sink:
    """A transport that counts what is written and keeps only the DATA payloads' sum
    (an 8 MB upload kept whole would hide the writer's own allocations)."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _wide_open(loop: asyncio.AbstractEventLoop) -> tuple[_H2Connection, _Sink]:
    """A connection whose server lets a request body go at once: 1 GiB windows."""
    conn = _H2Connection(loop, "upstream.test", 600.0)
    wire = _Sink()
    conn.connection_made(wire)  # type: ignore[arg-type]
    big = 1 << 30
    conn.data_received(frame(4, 0, 0, f.INITIAL_WINDOW_SIZE.to_bytes(2, "big")
                             + big.to_bytes(4, "big"))
                       + frame(8, 0, 0, (big - 65535).to_bytes(4, "big")))
    return conn, wire


def test_a_large_body_is_sent_without_copying_what_is_left_per_frame(
        loop: asyncio.AbstractEventLoop) -> None:
    """`_send` sliced off each frame's bytes (`data = data[sent:]`): every 16 KiB frame
    copied the rest of the body, a 25 MB upload ~19 GB of copying. Written by offset,
    what it allocates at once is a frame, not a body."""
    conn, wire = _wide_open(loop)
    body = b"a" * (8 << 20)
    stream = conn.open_stream(b"\x83", end_stream=False)
    before = wire.written
    tracemalloc.start()
    try:
        loop.run_until_complete(_send(conn, stream, body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert wire.written - before == len(body) + 9 * (len(body) // conn.max_frame)
    assert peak < 1 << 20  # main: ~8 MB, a copy of the body less its first frame
    conn.close()


# -- the liveness probe, its checks run by hand ----------------------------------------

def _silent_stream(loop: asyncio.AbstractEventLoop) -> tuple[_H2Connection, _Wire, _Stream]:
    conn = _H2Connection(loop, "upstream.test", 600.0)
    wire = _Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(frame(4, 0, 0))
    stream = conn.open_stream(b"\x82", end_stream=True)
    stream.wait()  # its caller waits for the head
    return conn, wire, stream


def _pings(wire: _Wire) -> list[bytes]:
    return [payload for kind, flags, _, payload in wire.frames() if kind == 6 and not flags]


def test_a_connection_silent_through_a_ping_is_dropped(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire, stream = _silent_stream(loop)
    changes: list[_H2Connection] = []
    conn.on_change = changes.append
    watch._check(conn)  # a check with nothing heard: asked
    assert len(_pings(wire)) == 1 and not stream.ended and not conn.closed
    watch._check(conn)  # and nothing since
    assert conn.closed and wire.closed and not conn.has_room()
    assert stream.ended and isinstance(stream.error, UpstreamTimeout)
    assert changes == [conn]  # the pool is told


@pytest.mark.parametrize("heard", [frame(6, 1, 0, b"liveness"), frame(1, 4, 1, b"\x88")])
def test_a_ping_answered_or_a_frame_keeps_the_connection(
        loop: asyncio.AbstractEventLoop, heard: bytes) -> None:
    """Its ACK, or any frame of a stream (the ACK may wait behind DATA), says alive."""
    conn, _wire, stream = _silent_stream(loop)
    watch._check(conn)
    conn.data_received(heard)
    watch._check(conn)
    assert not conn.closed and not stream.error
    conn.close()


def test_an_idle_connection_is_not_pinged(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire, stream = _silent_stream(loop)
    conn.abandon(stream)
    watch._check(conn)
    watch._check(conn)
    assert not _pings(wire) and not conn.closed
    conn.close()
