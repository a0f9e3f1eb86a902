"""A pushed stream's head over an HTTP/2 upstream (review of streamflat's cut 4, which
schedules the head only after `response.relay(push)`; `test_streamflat_head.py` pins it
over HTTP/1.1): a head whose Azure answer came with no DATA leaves alone within the turn,
never held for the first frame; a head that came with frames leaves with them in one
write; Azure resetting the stream after its head still gives the client the head first,
then the error event and `[DONE]`."""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_h2cut_relay import _general, _Wire
from tests.unit.test_relay_push import PROMPT, ClientChannel, client_body
from tests.unit.test_stream_steady import SEQUENCES

DATA, HEADERS, RST_STREAM, SETTINGS = 0, 1, 3, 4
END_STREAM, END_HEADERS = 0x1, 0x4
POLICY = StreamPolicy(client_model="gpt-4o")


class _H2Exchange:
    """One stream relayed from an HTTP/2 upstream connection the test feeds."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.conn = _H2Connection(loop, "azure.test", 600.0)
        self.conn.connection_made(_Wire())  # type: ignore[arg-type]
        self.conn.data_received(frame(SETTINGS, 0, 0))
        self.stream = self.conn.open_stream(b"\x82", True)
        self.channel = ClientChannel()
        self.record = RequestRecord("req-1", "POST")
        self.task: asyncio.Task[object] | None = None

    def azure(self, kind: int, flags: int, payload: bytes) -> None:
        self.conn.data_received(frame(kind, flags, self.stream.sid, payload))

    def head(self) -> None:
        self.azure(HEADERS, END_HEADERS, head_block(
            (":status", "200"), ("content-type", "text/event-stream")))

    def start(self) -> None:
        request = FastRequest(self.channel, "POST", "/v1/chat/completions",  # type: ignore[arg-type]
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        self.task = asyncio.get_running_loop().create_task(relay(
            request, "chat/completions", H2Response(self.stream), POLICY, POLICY.client_model,
            POLICY.keep_azure_fields, self.record, body=RequestBody(PROMPT)))

    async def done(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_head_that_came_alone_over_h2_leaves_at_once() -> None:
    frames = SEQUENCES[0]
    exchange = _H2Exchange()
    exchange.head()
    exchange.start()
    await _turns(5)
    assert len(exchange.channel.writes) == 1  # the head, not held for a frame
    assert exchange.channel.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert exchange.channel.writes[0].endswith(b"\r\n\r\n")
    exchange.azure(DATA, END_STREAM, b"".join(frames))
    await exchange.done()
    assert client_body(exchange.channel.writes) == _general(frames, POLICY)[0]


async def test_frames_that_came_with_the_h2_head_leave_with_it() -> None:
    frames = SEQUENCES[0]
    exchange = _H2Exchange()
    exchange.head()
    exchange.azure(DATA, 0, b"".join(frames[:2]))
    exchange.start()
    await _turns(5)
    first = exchange.channel.writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" in first
    assert first.split(b"\r\n\r\n", 1)[1]  # frames in the head's write
    exchange.azure(DATA, END_STREAM, b"".join(frames[2:]))
    await exchange.done()
    assert client_body(exchange.channel.writes) == _general(frames, POLICY)[0]


async def test_a_stream_reset_after_its_head_gives_the_head_then_the_error() -> None:
    exchange = _H2Exchange()
    exchange.head()
    exchange.azure(RST_STREAM, 0, (2).to_bytes(4, "big"))  # INTERNAL_ERROR, no DATA
    exchange.start()
    await exchange.done()
    data = b"".join(exchange.channel.writes)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    body = client_body(exchange.channel.writes)
    assert b'"error"' in body and body.endswith(b"data: [DONE]\n\n")
    assert exchange.record.error is not None
