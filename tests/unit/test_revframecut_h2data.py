"""Review of the HTTP/2 connection's inline DATA path (branch framecut): the cases its
own tests leave to `_on_data`'s old tests, taken through the inline path itself (plain
frames, several a read): a stream paused mid-read, a sink failing mid-read (its client
gone) beside a healthy stream, DATA for a closed, an unknown or a reserved-bit stream id,
and an inflated (gzip) pushed stream."""

from __future__ import annotations

import struct
import zlib

import pytest

from azure_openai_proxy.upstream.h2 import connection as h2conn
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.frames import CLIENT_PREFACE
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_framecut_h2data import _opened, _Wire

DATA, HEADERS, RST_STREAM, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR, CANCEL = 0x1, 0x8


def _written(wire: _Wire) -> list[tuple[int, int, bytes]]:
    """(kind, stream, payload) of every frame the connection wrote after its preface."""
    data = b"".join(wire.writes)
    pos = len(CLIENT_PREFACE) if data.startswith(CLIENT_PREFACE) else 0
    out = []
    while pos + 9 <= len(data):
        head, _, sid = struct.unpack_from(">IBI", data, pos)
        end = pos + 9 + (head >> 8)
        out.append((head & 0xFF, sid, data[pos + 9:end]))
        pos = end
    return out


class _Sink:
    """A relay's sink: what it was fed, and how it ended. `on_feed(n)` runs at its
    n-th feed (1-based), before the bytes are kept."""

    def __init__(self, on_feed: dict[int, object] | None = None) -> None:
        self.fed: list[bytes] = []
        self.ended = False
        self.failed: Exception | None = None
        self.on_feed = on_feed or {}

    def feed(self, data: bytes) -> None:
        action = self.on_feed.get(len(self.fed) + 1)
        if callable(action):
            action()
        self.fed.append(data)

    def flush(self) -> None: ...

    def end(self) -> None:
        self.ended = True

    def fail(self, error: Exception) -> None:
        self.failed = error


def _answered(conn: _H2Connection, *headers: tuple[str, str]) -> H2Response:
    stream = conn.open_stream(b"\x82", True)
    conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block(
        (":status", "200"), ("content-type", "text/event-stream"), *headers)))
    return H2Response(stream)


def _relaying(*headers: tuple[str, str]) -> tuple[_Wire, _H2Connection, _Sink]:
    """A connection whose stream 1 answered (`headers` added) and is pushed to a sink."""
    wire = _Wire()
    conn = _opened(wire)
    sink = _Sink()
    _answered(conn, *headers).relay(sink)
    return wire, conn, sink


def _piece(n: int) -> bytes:
    return b'data: {"n": %d, "text": "' % n + b"x" * 60 + b'"}\n\n'


async def test_a_stream_paused_mid_read_queues_the_reads_later_frames_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The sink's reader turns slow at its second frame: the rest of the read must be
    # queued (not fed) and not credited, and go to the sink in order on `resume`.
    monkeypatch.setattr(h2conn, "_CREDIT_AT", 1)  # every fed frame credits its stream
    wire = _Wire()
    conn = _opened(wire)
    answer = _answered(conn)
    sink = _Sink({2: answer.pause})
    answer.relay(sink)
    pieces = [_piece(n) for n in range(6)]
    conn.data_received(b"".join(frame(DATA, 0, 1, p) for p in pieces))
    assert sink.fed == pieces[:2]
    assert [inc for sid, inc in wire.window_updates() if sid == 1] == [len(p) for p in pieces[:2]]
    answer.resume()
    assert sink.fed[:2] == pieces[:2] and b"".join(sink.fed[2:]) == b"".join(pieces[2:])
    conn.data_received(frame(DATA, END_STREAM, 1, pieces[0]))
    assert sink.ended and b"".join(sink.fed) == b"".join(pieces + pieces[:1])
    assert not conn.closed


async def test_a_sink_failing_mid_read_resets_its_stream_only() -> None:
    # Stream 1's client is gone at its second frame (its sink raises); stream 3's
    # frames, interleaved in the same read, all arrive in order and it ends; stream 1 is
    # reset (CANCEL) once, its later frames count for the connection's window only.
    wire = _Wire()
    conn = _opened(wire)
    first, second = _answered(conn), _answered(conn)

    def gone() -> None:
        raise ConnectionResetError("the client went away")

    sinks = [_Sink({2: gone}), _Sink()]
    first.relay(sinks[0])
    second.relay(sinks[1])
    pieces = [_piece(n) for n in range(8)]
    read = b"".join(frame(DATA, 0, sid, p) for p in pieces for sid in (1, 3))
    read += frame(DATA, END_STREAM, 3, pieces[0])
    conn.data_received(read)
    assert sinks[0].fed == pieces[:1] and sinks[0].failed is not None
    assert sinks[1].fed == pieces + pieces[:1] and sinks[1].ended
    assert [(kind, sid) for kind, sid, _ in _written(wire) if kind == RST_STREAM] == [(RST_STREAM, 1)]
    assert [p for kind, sid, p in _written(wire) if kind == RST_STREAM] == [CANCEL.to_bytes(4, "big")]
    assert not conn.closed and not conn.streams
    acked = sum(inc for sid, inc in wire.window_updates() if sid == 0)
    assert acked + conn.unacked == 2 * len(b"".join(pieces)) + len(pieces[0])


async def test_plain_data_for_a_closed_stream_counts_for_the_connection_only() -> None:
    wire, conn, sink = _relaying()
    conn.data_received(frame(DATA, END_STREAM, 1, _piece(0)))
    assert sink.ended
    unacked = conn.unacked
    conn.data_received(frame(DATA, 0, 1, _piece(1)) * 3)  # after its end: a stream closed
    assert conn.unacked == unacked + 3 * len(_piece(1))
    assert sink.fed == [_piece(0)] and not conn.closed
    assert all(kind != GOAWAY for kind, _, _ in _written(wire))


async def test_plain_data_for_a_stream_never_opened_ends_the_connection() -> None:
    # RFC 9113 §5.1: DATA on an idle stream is a connection error (PROTOCOL_ERROR), even
    # in the middle of a read of another stream's plain frames.
    wire, conn, sink = _relaying()
    conn.data_received(frame(DATA, 0, 1, _piece(0)) + frame(DATA, 0, 7, _piece(1))
                       + frame(DATA, 0, 1, _piece(2)))
    goaways = [p for kind, _, p in _written(wire) if kind == GOAWAY]
    assert len(goaways) == 1 and goaways[0][4:8] == PROTOCOL_ERROR.to_bytes(4, "big")
    assert conn.closed and sink.fed == [_piece(0)] and sink.failed is not None


async def test_plain_data_with_the_reserved_bit_set_reaches_its_stream() -> None:
    # RFC 9113 §4.1: the stream identifier's reserved bit is ignored on receipt.
    _, conn, sink = _relaying()
    conn.data_received(frame(DATA, 0, 0x80000001, _piece(0)) + frame(DATA, 0, 1, _piece(1)))
    assert sink.fed == [_piece(0), _piece(1)] and not conn.closed


async def test_an_inflated_pushed_streams_plain_frames_reach_the_sink_inflated() -> None:
    # A gzip answer's DATA frames hold the compressed body: the sink must get it
    # inflated (the inline path is only for streams without a decoder).
    _, conn, sink = _relaying(("content-encoding", "gzip"))
    body = b"".join(_piece(n) for n in range(40))
    packer = zlib.compressobj(wbits=31)
    packed = packer.compress(body) + packer.flush()
    parts = [packed[at:at + 97] for at in range(0, len(packed), 97)]
    conn.data_received(b"".join(frame(DATA, 0, 1, part) for part in parts))
    conn.data_received(frame(DATA, END_STREAM, 1, b""))
    assert sink.ended and b"".join(sink.fed) == body
