"""A graceful shutdown lets the requests in flight finish: an upload being read is read
to its end, even one whose reading had paused for a full body buffer."""

from __future__ import annotations

import asyncio
import socket

from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from tests.http.engine import engine, read_reply, until
from tests.http_app import EngineTestApp, Events

SIZE = 1024 * 1024  # past the body buffer's high-water mark: reading pauses


class GatedReader(EngineTestApp):
    """`/gated` reads one piece of the body, waits for `events.release`, then reads the
    rest and answers its size."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.routes[("POST", "/gated")] = self.gated

    async def gated(self, request: HttpRequest) -> Reply:
        size = 0
        async for piece in request.body_chunks():
            size += len(piece)
            await self.events.release.wait()
        return Answer(200, {"content-type": "text/plain"}, str(size).encode())


async def test_an_upload_paused_for_a_full_buffer_is_read_to_its_end_during_shutdown() -> None:
    events = Events()
    async with engine(GatedReader(events)) as e:
        reader, writer = await e.connect()
        writer.write(f"POST /gated HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
                     .encode())
        sender = asyncio.create_task(_send(writer, SIZE))
        await until(lambda: any(c.reading_paused for c in e.server.connections))
        conn = next(iter(e.server.connections))
        stopping = asyncio.create_task(e.server.shutdown(30))
        await until(lambda: conn.closing)
        events.release.set()
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["connection"]) == (200, str(SIZE).encode(), "close")
        await asyncio.wait_for(stopping, 10)
        await sender
        writer.close()


async def _send(writer: asyncio.StreamWriter, size: int) -> None:
    for _ in range(size // 65536):
        writer.write(b"x" * 65536)
        await writer.drain()


class Flood(EngineTestApp):
    """`/flood` streams until it is cancelled (noted in `events.calls`, beside the app's
    own `cleanup`)."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.routes[("GET", "/flood")] = self.flood

    async def flood(self, request: HttpRequest) -> Reply:
        out = request.stream(200, {"content-type": "application/octet-stream"})
        try:
            while True:
                await out.write(b"x" * 65536)
        except asyncio.CancelledError:
            self.events.calls.append("cancelled")  # (where a cut stream records its usage)
            raise


async def test_a_handler_its_client_does_not_read_is_cancelled_before_the_cleanup() -> None:
    # Closing a connection whose client reads nothing never ends it (the transport waits
    # to write its buffer first): its handler was not cancelled, and the app's cleanup
    # (the ledger closed) came first; its `finally` ran, if ever, after it.
    events = Events()
    async with engine(Flood(events)) as e:
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (never read)
            client.setblocking(False)
            await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", e.port))
            client.send(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: any(c.write_paused for c in e.server.connections))
            await asyncio.wait_for(e.server.shutdown(0.05), 10)
        assert events.calls[-2:] == ["cancelled", "cleanup"]
