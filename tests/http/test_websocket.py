"""The WebSocket hook: an application that takes `Upgrade: websocket` gets a handler run
on the connection after the engine's handshake (the `websockets` library's sans-I/O
protocol); one that declines serves the request as plain HTTP. Driven by a real
`websockets` client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from azure_openai_proxy.http.interface import HttpRequest, WebSocket, WebSocketHandler
from tests.http.engine import engine, read_reply, until
from tests.http_app import EngineTestApp, Events


class EchoSocketApp(EngineTestApp):
    """`/ws-echo`: every message back (text as text, bytes as bytes) until the client
    says "bye"; `/ws-fail`: a handler that raises; `/ws-hold`: a handler that reads
    nothing until released; anything else: declined."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.closed_with: list[int | None] = []

    def websocket(self, request: HttpRequest) -> Awaitable[WebSocketHandler | None]:
        async def decide() -> WebSocketHandler | None:
            if request.path == "/ws-echo":
                return self.echo_socket
            if request.path == "/ws-fail":
                return self.failing_socket
            if request.path == "/ws-1005":
                return self.no_status_socket
            if request.path == "/ws-hold":
                return self.holding_socket
            return None
        return decide()

    async def echo_socket(self, socket: WebSocket) -> None:
        while True:
            message = await socket.receive()
            if message == "bye":
                await socket.close(4000, "bye")
                return
            await socket.send(message)

    async def no_status_socket(self, socket: WebSocket) -> None:
        await socket.receive()
        await socket.close(1005, "")  # what a peer's close without a code reads as

    async def failing_socket(self, socket: WebSocket) -> None:
        await socket.receive()
        raise RuntimeError("handler bug")

    async def holding_socket(self, socket: WebSocket) -> None:
        """Reads nothing until `events.release`; then counts messages up to "end"."""
        await self.events.release.wait()
        count = 0
        while await socket.receive() != "end":
            count += 1
        await socket.send(str(count))


async def test_an_echo_over_a_real_websockets_client() -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-echo") as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01binary"
        big = "x" * 300_000  # fragmented by nobody, framed by the library
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 5) == big
        await ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_a_fragmented_message_arrives_whole() -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-echo") as ws:
        await ws.send(["frag", "ment", "ed"])
        assert await asyncio.wait_for(ws.recv(), 5) == "fragmented"


async def test_a_message_of_endless_empty_fragments_closes_with_1009() -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-echo") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.send(["a", *([""] * 70_000)])
            await asyncio.wait_for(ws.recv(), 10)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_close_with_a_reserved_code_is_sent_as_1000() -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-1005") as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


async def test_a_failing_handler_closes_with_1011() -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-fail") as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_a_declined_upgrade_is_served_as_plain_http_and_keep_alive_goes_on() -> None:
    async with engine(EchoSocketApp(Events())) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /echo?q=plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\nGET /echo?q=next HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await read_reply(reader)
        assert (status, headers["x-query"]) == (200, "plain")
        assert (await read_reply(reader))[1]["x-query"] == "next"
        writer.close()


async def test_a_websockets_client_declined_gets_the_http_answer() -> None:
    async with engine(EchoSocketApp(Events())) as e:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{e.port}/nowhere"):
                pass
        assert refused.value.response.status_code == 404


async def test_an_application_without_the_hook_serves_upgrades_as_http() -> None:
    async with engine() as e:  # EngineTestApp has no websocket()
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{e.port}/echo"):
                pass
        assert refused.value.response.status_code == 200


async def test_a_bad_handshake_gets_the_protocols_400() -> None:
    async with engine(EchoSocketApp(Events())) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /ws-echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 400 ")
        writer.close()


async def test_a_text_message_that_is_not_utf8_closes_with_1007(
        caplog: pytest.LogCaptureFixture) -> None:
    async with engine(EchoSocketApp(Events())) as e, connect(f"ws://127.0.0.1:{e.port}/ws-echo") as ws:
        await ws.send(b"\xff\xfe", text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_messages_the_handler_has_not_read_pause_reading_until_it_reads() -> None:
    events = Events()
    async with engine(EchoSocketApp(events)) as e, connect(f"ws://127.0.0.1:{e.port}/ws-hold") as ws:
        for n in range(200):
            await ws.send(f"message {n}")
        await ws.send("end")
        conn = next(iter(e.server.connections))
        assert conn.transport is not None
        transport = conn.transport
        await until(lambda: not transport.is_reading())
        events.release.set()
        assert await asyncio.wait_for(ws.recv(), 5) == "200"
