"""While the application decides on a WebSocket (its hook may be opening a connection
upstream), the engine keeps reading the client: a client that leaves cancels the
decision at once, and what it sent meanwhile reaches the WebSocket after the handshake."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable

from azure_openai_proxy.http.interface import HttpRequest, WebSocket, WebSocketHandler
from tests.http.engine import engine
from tests.http_app import EngineTestApp, Events

_MASKED_HELLO = bytes([0x81, 0x85]) + b"\x00\x00\x00\x00" + b"hello"  # text, key 0


class SlowDeciderApp(EngineTestApp):
    """`/ws-slow`: the hook waits for `events.release` (noting a cancellation), then
    takes the WebSocket with a handler that echoes one message."""

    def websocket(self, request: HttpRequest) -> Awaitable[WebSocketHandler | None]:
        async def decide() -> WebSocketHandler | None:
            self.events.body_read.set()  # (the hook is running)
            try:
                await self.events.release.wait()
            except asyncio.CancelledError:
                self.events.cancelled.set()
                raise
            return self.echo_once
        return decide()

    async def echo_once(self, socket: WebSocket) -> None:
        await socket.send(await socket.receive())


def handshake() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws-slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def test_a_client_that_leaves_during_the_decision_cancels_it() -> None:
    events = Events()
    async with engine(SlowDeciderApp(events)) as e:
        _, writer = await e.connect()
        writer.write(handshake())
        await asyncio.wait_for(events.body_read.wait(), 5)
        writer.close()  # a FIN: the client has left
        await asyncio.wait_for(events.cancelled.wait(), 5)


async def test_what_the_client_sends_during_the_decision_reaches_the_websocket() -> None:
    events = Events()
    async with engine(SlowDeciderApp(events)) as e:
        reader, writer = await e.connect()
        writer.write(handshake())
        await asyncio.wait_for(events.body_read.wait(), 5)
        writer.write(_MASKED_HELLO)  # before the 101: held for the WebSocket
        await writer.drain()
        events.release.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"\x81\x05hello"
        writer.close()
