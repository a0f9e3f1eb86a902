"""A client that leaves just as a stream frame is written to it is a quiet 499 with its
usage estimated, never an "unexpected error" 500 (found by bench/streamscale.py under
load: 21 in 5,000 streams).

How it happens: the gateway's socket buffer is full (the client reads slowly), so the
transport holds the rest of a frame; the client then half-closes. The transport starts
closing at once but reports the connection lost only once its buffer is written, so the
handler is not cancelled yet: the next frame's write raises `ClientDisconnected` in the
relay task, and that exception, not a cancel, reaches the application.

Everything runs for real on loopback in one event loop: a hand-written Azure that sends
frames when told to, the gateway (FastServer) with a small send buffer, and a raw client
socket with a small receive buffer that never reads. Each step waits on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from azure_openai_proxy.gateway.app import GatewayApp, create_app
from azure_openai_proxy.http.server import FastServer, serve_fast
from azure_openai_proxy.observability.accesslog import access_logger
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.e2e.h1raw import read_request
from tests.support import bound_socket
from tests.waiting import until_async

# Far more than the two small socket buffers hold (so the transport keeps part of it),
# far less than the transport's 64 KiB high-water mark (so the relay does not wait in
# drain() and writes the next frame as soon as it comes).
_FIRST_FRAME_CHARS = 40 * 1024
_SMALL_BUFFER = 4096


def _frame(content: str) -> bytes:
    event = {"id": "chatcmpl-gone", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": content},
                                             "finish_reason": None}]}
    data = b"data: " + orjson.dumps(event) + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass
class _Azure:
    """A chat stream's answer: its head and a large first frame at once, the second
    frame when `second` is set; it then waits for `done`."""

    second: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n"
                         + _frame("x" * _FIRST_FRAME_CHARS))
            self.answered.set()
            await self.second.wait()
            writer.write(_frame("more"))
            await self.done.wait()
        finally:
            writer.close()


class _Lines(logging.Handler):
    """The access log's lines, as the gateway writes them (one per request)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(record.getMessage()))


@pytest.fixture
def access_lines() -> Iterator[_Lines]:
    handler = _Lines()
    level = access_logger.level
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)


async def test_a_client_that_leaves_as_a_frame_is_written_is_a_499_with_estimated_usage(
    access_lines: _Lines, caplog: pytest.LogCaptureFixture,
) -> None:
    await _client_leaves_as_a_frame_is_written(access_lines, caplog)


def test_the_same_on_uvloop(access_lines: _Lines, caplog: pytest.LogCaptureFixture) -> None:
    """uvloop's transports close the same way (and `serve` runs on uvloop)."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_client_leaves_as_a_frame_is_written(access_lines, caplog))


async def _client_leaves_as_a_frame_is_written(
    access_lines: _Lines, caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    azure = _Azure()
    upstream = await asyncio.start_server(azure.handle, sock=bound_socket())
    upstream_port = upstream.sockets[0].getsockname()[1]
    made = create_app(gateway_settings(f"http://127.0.0.1:{upstream_port}"))
    app = await made if asyncio.iscoroutine(made) else made
    assert isinstance(app, GatewayApp)
    listening = bound_socket()
    # Accepted sockets inherit it: the kernel holds little of what the gateway writes.
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_BUFFER)
    server: FastServer = await serve_fast(app, None, 0, backlog=16, sock=listening)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_BUFFER)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, listening.getsockname())
        body = orjson.dumps({"model": "gpt-4o", "stream": True,
                             "messages": [{"role": "user", "content": "tell me a story"}]})
        await loop.sock_sendall(client, (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
            b"authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body)
        await asyncio.wait_for(azure.answered.wait(), 10)

        def holding() -> Any:
            """The gateway's connection once its transport holds part of the frame."""
            for conn in server.connections:
                transport = conn.transport
                if transport is not None and transport.get_write_buffer_size() > 0:
                    return conn
            return None

        await until_async(holding, 10, "the gateway never had to buffer the first frame")
        conn = holding()
        assert not conn.write_paused  # below the high-water mark: no drain() under way
        # The client leaves (a FIN): the transport closes, yet keeps its bytes to write.
        client.shutdown(socket.SHUT_WR)
        await until_async(lambda: conn.transport.is_closing(), 10, "the FIN was not read")
        assert not conn.closed  # connection_lost has not run: the handler is not cancelled
        # The next frame comes from Azure and is written to the leaving client.
        azure.second.set()
        await until_async(lambda: access_lines.lines, 10, "the request was not logged")
        [line] = access_lines.lines
        assert line["status"] == 499, line
        # Azure sent no usage frame: these are the gateway's estimate of what it relayed.
        usage = line["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, line
        assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    finally:
        # An RST, so that nothing waits for the unread bytes.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        azure.done.set()
        with contextlib.suppress(Exception):
            await server.shutdown(5.0)
        upstream.close()
        await upstream.wait_closed()
