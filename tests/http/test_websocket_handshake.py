"""What a WebSocket handler learns and chooses (for the Realtime bridge): the peer's
close code and reason as soon as its close frame arrives, and the subprotocol a handler
speaks chosen from those the client offers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from azure_openai_proxy.http.interface import (
    HttpRequest,
    WebSocket,
    WebSocketClosed,
    WebSocketHandler,
)
from tests.http.engine import engine
from tests.http_app import EngineTestApp, Events


class _Speaking:
    """A handler that speaks `realtime` and reports how the client closed."""

    subprotocols = ("realtime",)

    def __init__(self) -> None:
        self.closed: asyncio.Future[tuple[int | None, str]] | None = None

    async def __call__(self, socket: WebSocket) -> None:
        # Read in a task of its own, as the realtime bridge does: the engine cancels the
        # handler itself once the TCP connection is gone (just after the closing handshake).
        self.closed = asyncio.get_running_loop().create_future()
        await asyncio.wait((asyncio.ensure_future(self._echo(socket, self.closed)),))

    @staticmethod
    async def _echo(socket: WebSocket, closed: asyncio.Future[tuple[int | None, str]]) -> None:
        try:
            while True:
                await socket.send(await socket.receive())
        except WebSocketClosed as exc:
            closed.set_result((exc.code, exc.reason))


class SpeakingApp(EngineTestApp):
    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.handler = _Speaking()

    def websocket(self, request: HttpRequest) -> Awaitable[WebSocketHandler | None]:
        async def decide() -> WebSocketHandler | None:
            return self.handler
        return decide()


async def test_the_handler_sees_the_clients_close_code_and_reason() -> None:
    app = SpeakingApp(Events())
    async with engine(app) as e:
        async with connect(f"ws://127.0.0.1:{e.port}/") as ws:
            await ws.send("x")
            await asyncio.wait_for(ws.recv(), 5)
            await ws.close(4001, "done here")
        assert app.handler.closed is not None
        assert await asyncio.wait_for(app.handler.closed, 5) == (4001, "done here")


async def test_the_subprotocol_the_handler_speaks_is_chosen_when_offered() -> None:
    app = SpeakingApp(Events())
    async with engine(app) as e:
        offered = [Subprotocol("openai-insecure-api-key.k"), Subprotocol("realtime")]
        async with connect(f"ws://127.0.0.1:{e.port}/", subprotocols=offered) as ws:
            assert ws.subprotocol == "realtime"
        async with connect(f"ws://127.0.0.1:{e.port}/", subprotocols=[Subprotocol("other")]) as ws:
            assert ws.subprotocol is None  # none it speaks: the handshake goes on without one
        async with connect(f"ws://127.0.0.1:{e.port}/") as ws:
            assert ws.subprotocol is None
