"""A streamed answer's chunk framing and its short path once the head has left
(`FastStream`, `chunk` in http/request.py): every size framed exactly as the general
`%x` form, one write per chunk, and whether the client is there read from the
connection's `gone` flag, never asked of the transport per chunk (issue 15)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.http.interface import ClientDisconnected
from azure_openai_proxy.http.request import FastRequest, FastStream, chunk


def formatted(data: Any) -> bytes:
    """The general form the short path must equal."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def test_chunk_is_the_formatted_form_for_every_size_to_70000_and_random_ones() -> None:
    source = bytes(range(256)) * 300  # 76,800 bytes: sizes past the size lines' table
    view = memoryview(source)
    for size in range(70001):
        piece = view[:size]
        assert chunk(piece) == formatted(piece), size  # type: ignore[arg-type]
    rng = random.Random(15)
    for _ in range(200):
        data = rng.randbytes(rng.choice((rng.randrange(1, 5000), rng.randrange(1, 1 << 20))))
        assert chunk(data) == formatted(data)


class Channel:
    """The connection as a stream sees it; its transport records each write and must
    not be asked whether it is closing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport: Any = self
        self.closing = False
        self.gone = False
        self.write_paused = False
        self.loop = asyncio.get_running_loop()
        self.asked = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        self.asked += 1
        return False  # a transport that has not learned it yet: `gone` is the truth

    def get_extra_info(self, name: str) -> Any:
        return None

    def date(self) -> str:
        return "D"

    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...

    async def drain(self) -> None:
        if self.gone:
            raise ClientDisconnected("gone")


HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nDate: D\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def started(channel: Channel, http11: bool = True, method: str = "GET") -> FastStream:
    request = FastRequest(channel, method, "/", CIMultiDictProxy(CIMultiDict()), http11,
                          True, None, None)
    return request.stream(200, {"content-type": "text/event-stream"})


async def test_every_frame_after_the_head_is_one_write_in_the_formatted_form() -> None:
    channel = Channel()
    out = started(channel)
    rng = random.Random(13)
    sizes = [1, 2, 15, 16, 255, 256, 4095, 4096, 4097, 65535, 65536, 70000,
             *(rng.randrange(1, 9000) for _ in range(300))]
    frames = [rng.randbytes(size) for size in sizes]
    assert out.send(frames[0])
    assert channel.writes == [HEAD + formatted(frames[0])]
    for i, frame in enumerate(frames[1:]):
        if i % 2:
            assert out.send(frame)
        else:
            await out.write(frame)
    assert channel.writes[1:] == [formatted(frame) for frame in frames[1:]]
    assert out.send(b"")  # nothing: an empty chunk would end the body
    await out.write(b"")
    await out.end(b"data: [DONE]\n\n")
    assert channel.writes[len(frames):] == [formatted(b"data: [DONE]\n\n") + b"0\r\n\r\n"]
    with pytest.raises(RuntimeError):
        out.send(b"x")


async def test_a_frame_reads_the_connections_flag_not_the_transport() -> None:
    channel = Channel()
    out = started(channel)
    for _ in range(5):
        out.send(b"data: x\n\n")
        await out.write(b"data: y\n\n")
    assert channel.asked == 0  # not a call per frame to learn what a flag says
    channel.gone = True  # connection_lost (or our close()): the transport may not know yet
    with pytest.raises(ClientDisconnected):
        out.send(b"data: z\n\n")
    with pytest.raises(ClientDisconnected):
        await out.write(b"data: z\n\n")
    assert len(channel.writes) == 10


async def test_the_head_is_on_the_wire_only_once_written() -> None:
    gone = Channel()
    gone.gone = True
    out = started(gone)
    with pytest.raises(ClientDisconnected):
        out.send(b"data: x\n\n")
    assert gone.writes == [] and out.drop_pending_head()  # nothing left: another answer may

    channel = Channel()
    out = started(channel)
    await asyncio.sleep(0)  # the head alone, at the end of the turn
    assert channel.writes == [HEAD]
    assert not out.drop_pending_head()
    assert out.send(b"data: x\n\n") and channel.writes[1:] == [formatted(b"data: x\n\n")]


async def test_http10_and_bodyless_streams_keep_their_framing() -> None:
    channel = Channel()
    out = started(channel, http11=False)
    out.send(b"data: x\n\n")
    await out.write(b"data: y\n\n")
    await out.end(b"data: [DONE]\n\n")
    assert b"".join(channel.writes).endswith(b"\r\n\r\ndata: x\n\ndata: y\n\ndata: [DONE]\n\n")
    assert b"Transfer-Encoding" not in channel.writes[0]

    head = Channel()
    out = started(head, method="HEAD")
    out.send(b"data: x\n\n")
    await out.end(b"data: [DONE]\n\n")
    assert len(head.writes) == 1 and head.writes[0].endswith(b"\r\n\r\n")  # the head alone
