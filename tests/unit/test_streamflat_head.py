"""A pushed stream's head (issue 15, session 28): relayed from our own request
(`FastRequest`), the head is scheduled (`FastStream.send_head_soon`) only once what came
with Azure's head has been relayed. It usually left with those frames, and then no
callback of the loop is made to send it; when nothing came with Azure's head, it still
leaves alone at the end of that turn, never held back until the first frame."""

from __future__ import annotations

import asyncio

import pytest

from azure_openai_proxy.http.request import FastStream
from azure_openai_proxy.normalize.stream import StreamPolicy
from tests.unit.test_relay_push import Exchange, wire
from tests.unit.test_stream_steady import SEQUENCES


@pytest.fixture
def soon(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """The calls of the loop callback that sends a stream's head alone."""
    called: list[None] = []
    send_head = FastStream._send_head

    def counting(self: FastStream) -> None:
        called.append(None)
        send_head(self)

    monkeypatch.setattr(FastStream, "_send_head", counting)
    return called


async def test_frames_that_came_with_azures_head_take_it_with_them(soon: list[None]) -> None:
    frames = SEQUENCES[0]
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire(frames[:2], end=False))  # Azure's head, and two frames with it
    for _ in range(5):
        await asyncio.sleep(0)
    assert exchange.channel.writes  # the head left, with what came with it
    assert exchange.channel.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"data: " in exchange.channel.writes[0]
    assert soon == []  # no callback to send a head that had left
    exchange.conn.data_received(wire(frames[2:]))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    assert b"".join(exchange.channel.writes).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_a_head_that_came_alone_still_leaves_at_once(soon: list[None]) -> None:
    frames = SEQUENCES[0]
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(b"")  # Azure's head alone: its first frame comes later
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(exchange.channel.writes) == 1  # the head alone, not held for a frame
    assert exchange.channel.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert exchange.channel.writes[0].endswith(b"\r\n\r\n")
    assert soon == [None]
    exchange.conn.data_received(wire(frames))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    assert b"".join(exchange.channel.writes[1:]).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
