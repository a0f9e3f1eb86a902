"""A client that stops reading a chat stream, among others that read, on ONE HTTP/2
connection to Azure (the default path to an https endpoint): the others keep flowing at
their pace, and the stalled one is cut at `send_timeout`, its stream reset (RST_STREAM
CANCEL) on the shared connection, its place there freed, its usage estimated. A client
that resets its connection mid-stream: the same, and no traceback.

The gateway (FastServer, `upstream.http2: true`) in front of a scripted h2c server built
on the `h2` package that streams chat frames as fast as the windows allow."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from azure_openai_proxy.upstream.h2 import H2Transport
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.waiting import until_async

_FRAMES = 6000  # ~12 MB a stream: three stream windows, more than loopback's buffers too
_SHORT = 600  # a reader's: ~1.2 MB
_CONTENT = "y" * 2000
_SEND_TIMEOUT = 1.0


def _sse(frames: int) -> bytes:
    frame = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"content": _CONTENT}, "finish_reason": None}]}
    one = b"data: " + json.dumps(frame).encode() + b"\n\n"
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": frames,
                                      "total_tokens": frames + 5}}
    return one * frames + b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"


class _SseServer(asyncio.Protocol):
    """Every request, once its body has come: 200 text/event-stream and `_sse()` of
    `_SHORT` frames if its body says "short", else `_FRAMES`, as the windows allow."""

    resets: list[tuple[int, int]]  # (stream, code), shared by the class's connections
    connections: list[_SseServer]

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: Any = None
        self.pending: dict[int, bytes] = {}
        self.bodies: dict[int, bytes] = {}
        self.connections.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + (
                    event.data or b"")
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.conn.send_headers(event.stream_id, [
                    (":status", "200"), ("content-type", "text/event-stream")])
                short = b'"short"' in self.bodies.pop(event.stream_id, b"")
                self.pending[event.stream_id] = _sse(_SHORT if short else _FRAMES)
            elif isinstance(event, h2.events.StreamReset):
                self.resets.append((event.stream_id, event.error_code))
                self.pending.pop(event.stream_id, None)
        self._send()

    def _send(self) -> None:
        conn = self.conn
        for sid, body in list(self.pending.items()):
            while body:
                size = min(conn.local_flow_control_window(sid), len(body),
                           conn.max_outbound_frame_size)
                if size <= 0:
                    break
                conn.send_data(sid, body[:size], end_stream=size == len(body))
                body = body[size:]
            if body:
                self.pending[sid] = body
            else:
                del self.pending[sid]
        data = conn.data_to_send()
        if data:
            self.transport.write(data)


def _request(prompt: str = "A long story") -> bytes:
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": prompt}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


@dataclass
class _Stack:
    """The gateway (its FastServer on `port`) before the scripted server."""

    server: FastServer
    port: int
    transport: H2Transport


@pytest.fixture
async def stack() -> AsyncIterator[_Stack]:
    _SseServer.resets, _SseServer.connections = [], []
    upstream = await asyncio.get_running_loop().create_server(_SseServer, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    app = create_app(gateway_settings(f"http://127.0.0.1:{up_port}", upstream={"http2": True}))
    server = await serve_fast(app, "127.0.0.1", 0,
                              limits=ServerLimits(send_timeout=_SEND_TIMEOUT))
    transport = app.gateway.transport
    assert isinstance(transport, H2Transport)
    yield _Stack(server, server.sockets[0].getsockname()[1], transport)
    server.close()
    await server.wait_closed()
    await transport.close()
    upstream.close()


def _estimated(completion_tokens: int) -> bool:
    """Counted from the text relayed (about 4 characters a token), short of the whole
    stream's, not Azure's (`_sse`: a token a frame)."""
    return _FRAMES < completion_tokens < _FRAMES * len(_CONTENT) // 4


class _Lines(logging.Handler):
    """The access log's lines (one per request, as it ends) and anything the gateway
    logs at WARNING or above, or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.access: list[str] = []
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "azure_openai_proxy.access":
            if self.access and self.access[-1] is record.msg:
                return  # the same line again, propagated to the gateway's logger
            self.access.append(record.msg)
        elif record.exc_info or record.levelno >= logging.WARNING:
            self.bad.append(record)


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    gateway, access = logging.getLogger("azure_openai_proxy"), logging.getLogger(
        "azure_openai_proxy.access")
    level = access.level
    access.setLevel(logging.INFO)
    access.addHandler(handler)  # (a handler of its own: lines go through logging)
    gateway.addHandler(handler)
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    yield handler
    for logger in (access, gateway, asyncio_logger):
        logger.removeHandler(handler)
    access.setLevel(level)


async def _read_all(port: int) -> tuple[bytes, float]:
    """A short stream, read whole: its bytes, and how long it took."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=8 << 20)
    writer.write(_request("short"))
    data = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 30)
    writer.close()
    return data, time.monotonic() - started


async def test_a_stalled_client_on_a_shared_h2_connection_is_cut_and_reset_alone(
        stack: _Stack, lines: _Lines) -> None:
    port, server, transport = stack.port, stack.server, stack.transport
    stalled = socket.socket()
    try:
        _, alone = await _read_all(port)  # a reader's time with nobody stalled
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", port))
        stalled.send(_request())  # and never reads
        await until_async(lambda: any(c.write_paused for c in server.connections), 10)
        assert transport.connections_in_use() == 1
        # Two streams beside it on the same connection: each read whole, not slowed.
        answers = await asyncio.gather(_read_all(port), _read_all(port))
        for data, took in answers:
            assert data.count(_CONTENT.encode()) == _SHORT
            assert took < max(5 * alone, 2.0)
        assert len(_SseServer.connections) == 1  # all on one upstream connection
        # The stalled client is cut at send_timeout (on a loaded machine, maybe before the
        # readers end); its stream alone is reset (CANCEL): the connection's second (the
        # first reader had 1, the two beside it 5 and 7).
        await until_async(lambda: bool(_SseServer.resets), 6 * _SEND_TIMEOUT)
        assert _SseServer.resets == [(3, h2.errors.ErrorCodes.CANCEL)]
        await until_async(lambda: transport.connections_in_use() == 0, 5)
        await until_async(lambda: len(server.connections) == 0, 5)
        # Its record: the stream, its usage estimated from what was relayed (Azure's
        # usage frame never reached the gateway), beside three read whole.
        await until_async(lambda: len(lines.access) == 4, 5)
        records = sorted((json.loads(line) for line in lines.access), key=lambda r: r["status"])
        assert [(r["status"], r["stream"]) for r in records] == [(200, True)] * 3 + [(499, True)]
        assert [r["usage"]["completion_tokens"] for r in records[:3]] == [_SHORT] * 3
        assert _estimated(records[3]["usage"]["completion_tokens"])
        data, _ = await _read_all(port)  # the connection serves on
        assert data.count(_CONTENT.encode()) == _SHORT
        assert len(_SseServer.connections) == 1
        assert not lines.bad
    finally:
        stalled.close()


async def test_a_client_resetting_mid_stream_cancels_its_stream_without_a_traceback(
        stack: _Stack, lines: _Lines) -> None:
    port, transport = stack.port, stack.transport
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_request())
        await reader.readexactly(256 * 1024)  # mid-stream, the gateway writing on
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, with unread bytes in flight
    await until_async(lambda: len(_SseServer.resets) == 3, 5)
    assert {code for _, code in _SseServer.resets} == {h2.errors.ErrorCodes.CANCEL}
    await until_async(lambda: transport.connections_in_use() == 0, 5)
    # Each recorded, its usage estimated from what was relayed.
    await until_async(lambda: len(lines.access) == 3, 5)
    records = [json.loads(line) for line in lines.access]
    assert all(r["status"] == 499 and r["stream"] and _estimated(r["usage"]["completion_tokens"])
               for r in records)
    data, _ = await _read_all(port)
    assert data.count(_CONTENT.encode()) == _SHORT
    assert len(_SseServer.connections) == 1
    # No traceback, nothing of the gateway's own above INFO. (asyncio's own loop warns
    # "socket.send() raised exception." for the frames of the read that found the
    # reset, written before the loss is reported; uvloop drops them silently.)
    assert not [r for r in lines.bad if r.exc_info or r.name != "asyncio"]


async def test_a_client_half_closing_mid_stream_is_taken_as_gone(
        stack: _Stack, lines: _Lines) -> None:
    """As nginx (499, "client prematurely closed connection") and Go's server (the
    request's context cancelled at EOF) take it: a client that shuts down its sending
    side has left, and Azure's stream is not left running for nobody."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(_request())
    await reader.readexactly(256 * 1024)  # mid-stream
    writer.write_eof()
    await until_async(lambda: len(_SseServer.resets) == 1, 5)
    assert _SseServer.resets[0][1] == h2.errors.ErrorCodes.CANCEL
    await until_async(lambda: len(lines.access) == 1, 5)
    record = json.loads(lines.access[0])
    assert record["status"] == 499 and _estimated(record["usage"]["completion_tokens"])
    assert not [r for r in lines.bad if r.exc_info or r.name != "asyncio"]
    writer.close()
