"""A WebSocket client that sends pings and never reads: each ping is answered with a
pong, so while the client does not take what is written, nothing more is read from it
(as for messages, whose handler waits for the client): what waits to be written stays
bounded, not one pong per ping sent."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

from tests.http.engine import engine, until
from tests.http.test_websocket import EchoSocketApp
from tests.http_app import Events

_PING = bytes([0x89, 0x80 | 125]) + b"\x00\x00\x00\x00" + b"p" * 125  # masked, key 0
_PINGS = 64_000  # 8.4 MB of pings: 8.1 MB of pongs, were they all answered


async def test_pings_from_a_client_that_does_not_read_stop_being_read() -> None:
    events = Events()
    async with engine(EchoSocketApp(events)) as e:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads almost nothing
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", e.port))
        reader, writer = await asyncio.open_connection(sock=raw)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws-hold HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        conn = next(iter(e.server.connections))
        transport = conn.transport
        assert transport is not None
        server_socket = transport.get_extra_info("socket")
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer.write(_PING * _PINGS)  # never drained: the client's own buffer holds it
        await until(lambda: not transport.is_reading(), wait=10)
        # Reading stopped once the pongs waiting passed the transport's high-water mark:
        # a read's worth of pongs more at most, not 8 MB.
        assert transport.get_write_buffer_size() < 1024 * 1024
        writer.transport.abort()
