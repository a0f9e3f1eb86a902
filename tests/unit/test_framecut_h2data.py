"""The HTTP/2 connection's inline DATA path (`_H2Connection.data_received`: a frame
without flags for a pushed stream goes to its sink without `_on_data`, the connection's
window counted once a read) against the general one (`_on_data`, which a PADDED or
END_STREAM frame still takes): several streams on one connection relaying recorded Azure
sequences, their DATA frames interleaved into reads and each frame plain or padded at
random, give every client the normalizer's general path's bytes; flow control with small
credit points credits each stream as `_on_data` would and never leaves half the
connection's window unacknowledged past a read."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2 import connection as h2conn
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.frames import CLIENT_PREFACE
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_h2cut_relay import _general
from tests.unit.test_relay_push import PROMPT, ClientChannel, client_body
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, long_stream

DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0, 1, 4, 8
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8


class _Wire:
    """The upstream connection's transport: what the connection writes, kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def window_updates(self) -> list[tuple[int, int]]:
        """(stream, increment) of every WINDOW_UPDATE written, in order."""
        out, data = [], b"".join(self.writes)
        # (after our preface, whose WINDOW_UPDATE opens the connection's window)
        pos = len(CLIENT_PREFACE) if data.startswith(CLIENT_PREFACE) else 0
        while pos + 9 <= len(data):
            head, _, sid = struct.unpack_from(">IBI", data, pos)
            end = pos + 9 + (head >> 8)
            if head & 0xFF == WINDOW_UPDATE:
                out.append((sid, int.from_bytes(data[pos + 9:end], "big")))
            pos = end
        return out


def _data(sid: int, piece: bytes, padding: int | None, last: bool) -> bytes:
    """A DATA frame: plain (`padding` None) or PADDED with that many bytes of padding."""
    flags = END_STREAM if last else 0
    if padding is None:
        return frame(DATA, flags, sid, piece)
    return frame(DATA, flags | PADDED, sid, bytes([padding]) + piece + b"\0" * padding)


def _opened(wire: _Wire) -> _H2Connection:
    conn = _H2Connection(asyncio.get_running_loop(), "azure.test", 600.0)
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(frame(SETTINGS, 0, 0))
    return conn


async def _relayed(streams: list[list[bytes]], policy: StreamPolicy, paddings: list[int | None],
                   per_read: list[int], wire: _Wire) -> tuple[list[bytes], _H2Connection, list[int]]:
    """Each of `streams` (its DATA frames' payloads) relayed by the real `relay()` over
    one connection, the streams' frames taken in turn (one of each, round and round) and
    sent `per_read` frames a read; the n-th frame plain or padded by `paddings[n]`. The
    clients' bodies, the connection, and the DATA bytes sent (padding included)."""
    loop = asyncio.get_running_loop()
    conn = _opened(wire)
    channels, tasks, sids = [], [], []
    for _ in streams:
        stream = conn.open_stream(b"\x82", True)
        conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block(
            (":status", "200"), ("content-type", "text/event-stream"))))
        channel = ClientChannel()
        request = FastRequest(channel, "POST", "/v1/chat/completions",  # type: ignore[arg-type]
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        tasks.append(loop.create_task(relay(
            request, "chat/completions", H2Response(stream), policy, policy.client_model,
            policy.keep_azure_fields, RequestRecord("req", "POST"), body=RequestBody(PROMPT))))
        channels.append(channel)
        sids.append(stream.sid)
    for _ in range(5):
        await asyncio.sleep(0)
    order = []  # (stream index, frame index), in turn
    for n in range(max(map(len, streams))):
        order += [(s, n) for s, frames in enumerate(streams) if n < len(frames)]
    sent = [0] * len(streams)
    wire_frames = []
    for k, (s, n) in enumerate(order):
        padding = paddings[k % len(paddings)]
        wire_frames.append(_data(sids[s], streams[s][n], padding, n == len(streams[s]) - 1))
        sent[s] += len(streams[s][n]) + (0 if padding is None else padding + 1)
    at, r = 0, 0
    while at < len(wire_frames):
        size = per_read[r % len(per_read)]
        conn.data_received(b"".join(wire_frames[at:at + size]))
        at, r = at + size, r + 1
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    return [client_body(channel.writes) for channel in channels], conn, sent


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(which=st.lists(st.integers(-1, len(SEQUENCES) - 1), min_size=1, max_size=4),
       paddings=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=1, max_size=7),
       per_read=st.lists(st.integers(1, 9), min_size=1, max_size=5),
       policy=st.sampled_from(POLICIES))
def test_streams_interleaved_plain_or_padded_give_the_general_paths_bytes(
        which: list[int], paddings: list[int | None], per_read: list[int],
        policy: StreamPolicy) -> None:
    streams = [long_stream() if w < 0 else SEQUENCES[w] for w in which]
    got, conn, _ = asyncio.run(_relayed(streams, policy, paddings, per_read, _Wire()))
    assert got == [_general(frames, policy)[0] for frames in streams]
    assert not conn.closed


def _expected_credits(payloads: list[tuple[int, int]], credit_at: int) -> list[int]:
    """A pushed stream's WINDOW_UPDATE increments by `_on_data`'s rule: each frame's
    bytes (padding included) counted, and once a frame with content left at least
    `credit_at` counted and uncredited, all of it credited. `payloads`: (bytes on the
    wire, bytes of content) per frame."""
    credits, unread = [], 0
    for wire_size, content in payloads:
        unread += wire_size
        if content and unread >= credit_at:
            credits.append(unread)
            unread = 0
    return credits


@pytest.mark.parametrize("credit_at", [1, 300, 1000])
@pytest.mark.parametrize("paddings", [[None], [0], [None, 2, None, None, 0], [1, None]])
def test_small_windows_are_credited_per_stream_as_by_the_general_path(
        monkeypatch: pytest.MonkeyPatch, credit_at: int, paddings: list[int | None]) -> None:
    monkeypatch.setattr(h2conn, "_CREDIT_AT", credit_at)
    monkeypatch.setattr(h2conn, "_CONNECTION_CREDIT_AT", 2 * credit_at + 500)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    streams = [long_stream(), SEQUENCES[0], long_stream([f" w{n}" for n in range(30)])]
    wire = _Wire()
    got, conn, sent = asyncio.run(_relayed(streams, policy, paddings, [4, 1, 7], wire))
    assert got == [_general(frames, policy)[0] for frames in streams]
    updates = wire.window_updates()
    # Per stream: the increments `_on_data`'s rule gives for its frames as they went.
    order = []
    for n in range(max(map(len, streams))):
        order += [(s, n) for s, frames in enumerate(streams) if n < len(frames)]
    payloads: list[list[tuple[int, int]]] = [[] for _ in streams]
    for k, (s, n) in enumerate(order):
        padding = paddings[k % len(paddings)]
        size = len(streams[s][n])
        payloads[s].append((size + (0 if padding is None else padding + 1), size))
    for s, sid in enumerate(range(1, 2 * len(streams), 2)):
        expected = _expected_credits(payloads[s], credit_at)
        assert [inc for stream, inc in updates if stream == sid] == expected
    # The connection's window: every DATA byte acknowledged or still counted, and never
    # half of it (here: the small credit point) left unacknowledged past a read.
    acked = sum(inc for stream, inc in updates if stream == 0)
    assert acked + conn.unacked == sum(sent)
    assert acked > 0 and conn.unacked < h2conn._CONNECTION_CREDIT_AT


async def test_the_connections_window_is_credited_by_the_end_of_each_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One read of many plain frames for a pushed stream: the inline path counts them
    # once, at the read's end, where `_on_data` credited the connection within the read.
    monkeypatch.setattr(h2conn, "_CONNECTION_CREDIT_AT", 1000)
    wire = _Wire()
    conn = _opened(wire)
    stream = conn.open_stream(b"\x82", True)
    conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block(
        (":status", "200"), ("content-type", "text/event-stream"))))

    class Sink:
        def __init__(self) -> None:
            self.fed: list[bytes] = []

        def feed(self, data: bytes) -> None:
            self.fed.append(data)

        def flush(self) -> None: ...
        def end(self) -> None: ...
        def fail(self, error: Exception) -> None: ...

    sink = Sink()
    H2Response(stream).relay(sink)
    piece = b"data: " + b"x" * 90 + b"\n\n"
    received = 0
    for frames in (1, 3, 25, 2):
        conn.data_received(frame(DATA, 0, stream.sid, piece) * frames)
        received += len(piece) * frames
        acked = sum(inc for sid, inc in wire.window_updates() if sid == 0)
        assert acked + conn.unacked == received
        assert conn.unacked < 1000  # never half the window unacknowledged past a read
    assert acked > 0
    assert b"".join(sink.fed) == piece * 31


def test_a_pushed_streams_plain_data_frames_skip_on_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost the inline path saves (a Python call a frame): only the frames with flags
    # (padded, or the last) and the frames of streams not pushed reach `_on_data`.
    calls: list[int] = []
    original = _H2Connection._on_data

    def counted(self: _H2Connection, sid: int, flags: int, buf: bytes, start: int,
                end: int) -> None:
        calls.append(flags)
        original(self, sid, flags, buf, start, end)

    monkeypatch.setattr(_H2Connection, "_on_data", counted)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    streams = [long_stream(), long_stream([f" w{n}" for n in range(12)])]
    got, _, _ = asyncio.run(_relayed(streams, policy, [None, None, 1], [3], _Wire()))
    assert got == [_general(frames, policy)[0] for frames in streams]
    frames = sum(map(len, streams))
    padded = len(range(2, frames, 3))
    assert calls.count(0) == 0  # no plain frame of a pushed stream
    assert len(calls) <= padded + len(streams)  # the padded ones, and each stream's last
