"""A client that stops reading a chat stream, among others that read, on ONE HTTP/2
connection to Azure (the default path to an https endpoint): the others keep flowing at
their pace, and the stalled one is cut at `send_timeout`, its stream reset (RST_STREAM
CANCEL) on the shared connection, its place there freed, its usage estimated.

The gateway (FastServer, `upstream.http2: true`) in front of a scripted h2c server built
on the `h2` package that streams chat frames as fast as the windows allow."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from azure_openai_proxy.upstream.h2 import H2Transport
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.waiting import until_async

_FRAMES = 6000  # ~12 MB a stream: three stream windows, more than loopback's buffers too
_CONTENT = "y" * 2000
_SEND_TIMEOUT = 1.0


def _sse() -> bytes:
    frame = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"content": _CONTENT}, "finish_reason": None}]}
    one = b"data: " + json.dumps(frame).encode() + b"\n\n"
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": _FRAMES,
                                      "total_tokens": _FRAMES + 5}}
    return one * _FRAMES + b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"


class _SseServer(asyncio.Protocol):
    """Every request: 200 text/event-stream and `_sse()`, as the windows allow."""

    resets: list[tuple[int, int]]  # (stream, code), shared by the class's connections
    connections: list[_SseServer]

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: Any = None
        self.pending: dict[int, bytes] = {}
        self.connections.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.conn.send_headers(event.stream_id, [
                    (":status", "200"), ("content-type", "text/event-stream")])
                self.pending[event.stream_id] = _sse()
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
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


def _request() -> bytes:
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": "A long story"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def _gateway(upstream: str) -> tuple[Any, FastServer, int]:
    settings = gateway_settings(upstream, upstream={"http2": True})
    app = create_app(settings)
    server = await serve_fast(app, "127.0.0.1", 0,
                              limits=ServerLimits(send_timeout=_SEND_TIMEOUT))
    return app, server, server.sockets[0].getsockname()[1]


async def _read_all(port: int) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=32 << 20)
    writer.write(_request())
    data = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
    writer.close()
    return data, time.monotonic() - started


async def test_a_stalled_client_on_a_shared_h2_connection_is_cut_and_reset_alone() -> None:
    _SseServer.resets, _SseServer.connections = [], []
    upstream = await asyncio.get_running_loop().create_server(_SseServer, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    app, server, port = await _gateway(f"http://127.0.0.1:{up_port}")
    transport = app.gateway.transport
    assert isinstance(transport, H2Transport)
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
            assert data.count(_CONTENT.encode()) == _FRAMES
            assert took < max(5 * alone, 2.0)
        assert len(_SseServer.connections) == 1  # all on one upstream connection
        assert not _SseServer.resets
        # The stalled client is cut at send_timeout; its stream alone is reset (CANCEL).
        await until_async(lambda: bool(_SseServer.resets), 6 * _SEND_TIMEOUT)
        assert [code for _, code in _SseServer.resets] == [h2.errors.ErrorCodes.CANCEL]
        await until_async(lambda: transport.connections_in_use() == 0, 5)
        await until_async(lambda: len(server.connections) == 0, 5)
        data, _ = await _read_all(port)  # the connection serves on
        assert data.count(_CONTENT.encode()) == _FRAMES
        assert len(_SseServer.connections) == 1
    finally:
        stalled.close()
        server.close()
        await server.wait_closed()
        await app.gateway.transport.close()
        upstream.close()
