"""The pushed relay's client writes without `FastStream.send` (issue 15, session 29): over
HTTP/2 a steady frame is written from the sink's `feed` (the connection flushes each DATA
frame alone right after feeding it), and a flush writes its chunk itself once the
stream's head has left. Each is held against the stream normalizer's general path
(`fast=False`) on recorded Azure frame sequences: the same bytes, one write a DATA frame,
a slow client pausing Azure's stream, a client that leaves ending the relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import ClientDisconnected
from azure_openai_proxy.http.request import FastRequest, FastStream
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_h2cut_relay import _Wire
from tests.unit.test_relay_push import PROMPT, ClientChannel, client_body
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, long_stream

DATA, HEADERS, SETTINGS = 0, 1, 4
END_STREAM, END_HEADERS = 0x1, 0x4
POLICY = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)


class _Run:
    """One stream relayed from a real `_H2Connection` to a recording client."""

    def __init__(self, policy: StreamPolicy) -> None:
        loop = asyncio.get_running_loop()
        self.conn = _H2Connection(loop, "azure.test", 600.0)
        self.conn.connection_made(_Wire())  # type: ignore[arg-type]
        self.conn.data_received(frame(SETTINGS, 0, 0))
        self.stream = self.conn.open_stream(b"\x82", True)
        self.conn.data_received(frame(HEADERS, END_HEADERS, self.stream.sid, head_block(
            (":status", "200"), ("content-type", "text/event-stream"))))
        self.channel = ClientChannel()
        request = FastRequest(self.channel, "POST", "/v1/chat/completions",  # type: ignore[arg-type]
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        self.record = RequestRecord("req-1", "POST")
        self.task = loop.create_task(relay(
            request, "chat/completions", H2Response(self.stream), policy, policy.client_model,
            policy.keep_azure_fields, self.record, body=RequestBody(PROMPT)))

    async def started(self) -> None:
        for _ in range(5):  # the relay starts, waits, and its head leaves alone
            await asyncio.sleep(0)

    async def data(self, piece: bytes, last: bool = False) -> None:
        self.conn.data_received(frame(DATA, END_STREAM if last else 0, self.stream.sid, piece))
        await asyncio.sleep(0)


def _sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per `FastStream.send` call (the general way a pushed chunk leaves)."""
    calls: list[int] = []
    original: Callable[[FastStream, bytes], bool] = FastStream.send

    def counted(self: FastStream, data: bytes) -> bool:
        calls.append(len(data))
        return original(self, data)

    monkeypatch.setattr(FastStream, "send", counted)
    return calls


def _pieces(frames: list[bytes], sizes: list[int]) -> list[bytes]:
    pieces, at, n = [], 0, 0
    while at < len(frames):
        size = sizes[n % len(sizes)]
        pieces.append(b"".join(frames[at:at + size]))
        at, n = at + size, n + 1
    return pieces


def _general_by_piece(pieces: list[bytes], policy: StreamPolicy) -> list[bytes]:
    general = ChatStreamNormalizer(policy, fast=False)
    out = [general.feed(piece) for piece in pieces]
    out[-1] += general.finish()
    return out


@pytest.mark.parametrize("sizes", [[1], [1, 2], [2, 1, 3], [4]])
async def test_each_data_frame_is_one_write_of_the_general_paths_bytes_without_send(
        monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> None:
    sends = _sends(monkeypatch)
    for frames in [*SEQUENCES, long_stream([f" w{n}" for n in range(30)])]:
        for policy in POLICIES:
            pieces = _pieces(frames, sizes)
            expected = _general_by_piece(pieces, policy)
            run = _Run(policy)
            await run.started()
            assert len(run.channel.writes) == 1  # the head, alone
            for n, piece in enumerate(pieces):
                await run.data(piece, last=n == len(pieces) - 1)
            await asyncio.wait_for(run.task, 5)
            # One write a DATA frame that yields anything (several events of one frame
            # joined); the last frame's, then the end (`finish()`'s tail, if any).
            written = [client_body([b"\r\n\r\n" + w + b"0\r\n\r\n"])
                       for w in run.channel.writes[1:]]
            before_last = [out for out in expected[:-1] if out]
            assert written[:len(before_last)] == before_last, (sizes, policy)
            assert b"".join(written[len(before_last):]) == expected[-1]
            assert len(written) - len(before_last) <= 2
            assert run.record.error is None
    # Never through `FastStream.send`: the chunks left from the sink (`feed` for a
    # steady frame, `flush` for the others); the end is `FastStream.end`'s.
    assert sends == []


async def test_a_slow_client_pauses_azure_from_a_direct_write_and_gets_every_byte() -> None:
    frames = long_stream([f" w{n}" for n in range(24)])
    expected = b"".join(_general_by_piece(frames, POLICY))
    run = _Run(POLICY)
    await run.started()
    channel, paused = run.channel, 0
    for n, piece in enumerate(frames[:-1]):
        steady = n > 4 and b"content_filter_offsets" not in piece
        channel.write_paused = steady and n % 3 == 0  # the client's transport fills up
        written = len(channel.writes)
        await run.data(piece)
        if channel.write_paused and len(channel.writes) > written:
            # Written to a client that is behind: Azure's stream is read no more until
            # the client drains.
            assert run.stream.paused
            paused += 1
        channel.resume_writing()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not run.stream.paused
    await run.data(frames[-1], last=True)
    await asyncio.wait_for(run.task, 5)
    assert paused >= 5
    assert client_body(channel.writes) == expected


async def test_a_client_gone_mid_stream_ends_the_direct_relay_and_closes_azure() -> None:
    frames = long_stream([f" w{n}" for n in range(12)])
    run = _Run(POLICY)
    await run.started()
    for piece in frames[:7]:  # the template is learned: the stream is steady
        await run.data(piece)
    written = len(run.channel.writes)
    run.channel.lose()
    assert b"content_filter_offsets" not in frames[7]
    await run.data(frames[7])  # a steady content frame, for a client that is gone
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(run.task, 5)
    assert len(run.channel.writes) == written  # nothing written to it
    assert run.conn.streams.get(run.stream.sid) is None  # Azure's stream reset
    usage: Any = run.record.usage
    assert usage is not None and usage["estimated"] is True


async def test_a_relay_cancelled_mid_stream_writes_no_end_and_nothing_after() -> None:
    # What a stop past its grace does to a stream still running (`FastServer.shutdown`
    # cancels its handler): the client must see a body cut short, never the chunked
    # terminator of a whole one, and steady frames Azure still sends must not reach it.
    frames = long_stream([f" w{n}" for n in range(12)])
    run = _Run(POLICY)
    await run.started()
    for piece in frames[:7]:  # steady by now: the frames are written from `feed`
        await run.data(piece)
    written = len(run.channel.writes)
    assert written > 2
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run.task, 5)
    for piece in frames[7:9]:  # Azure's next frames, had its stream not been reset
        await run.data(piece)
    assert len(run.channel.writes) == written
    assert not any(w.endswith(b"0\r\n\r\n") for w in run.channel.writes)
    assert run.conn.streams.get(run.stream.sid) is None  # Azure's stream reset
    usage: Any = run.record.usage
    assert usage is not None and usage["estimated"] is True
