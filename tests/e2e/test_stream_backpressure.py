"""A client that stops reading a long stream holds Azure back, not the gateway's memory:
the pushed relay (`gateway/relay.py`) stops reading Azure's socket while the client's is
full, and once the client reads again it gets every byte, in order. Real sockets on
loopback: a real upstream server, the gateway in its thread, a raw client."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

from aiohttp import web

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.support import ServerThread, serve
from tests.unit.test_stream_normalizer import delta, finish_frame, prompt_frame, role_frame
from tests.waiting import until_async

FRAMES = 48_000
WORD = "x" * 1000
BATCH = 64  # frames per upstream write
BODY = (b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},'
        b'"messages":[{"role":"user","content":"hi"}]}')


class LongUpstream:
    """Streams `FRAMES` content frames of 1 KB as fast as the gateway takes them,
    counting what its socket accepted."""

    def __init__(self) -> None:
        self.sent = 0  # bytes whose write returned (accepted by the socket or its buffer)
        self.writing = False  # inside a write: blocked while the gateway does not read
        self.total = 0
        self.done = threading.Event()

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(prompt_frame() + role_frame())
            frame = delta(WORD)
            for _ in range(FRAMES // BATCH):
                data = frame * BATCH
                self.writing = True
                await response.write(data)
                self.writing = False
                self.sent += len(data)
            await response.write(finish_frame("stop") + b"data: [DONE]\n\n")
            await response.write_eof()
            self.done.set()
            return response

        self.total = len(delta(WORD)) * FRAMES
        app = web.Application()
        app.router.add_post("/openai/deployments/{dep}/chat/completions", chat)
        return app


async def test_a_client_that_stops_reading_holds_azure_back_then_gets_every_byte(
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    upstream = LongUpstream()
    with serve(upstream.app) as server:
        gateway = start_gateway(gateway_settings(server.url))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", gateway.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                     b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(BODY), BODY))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 200")

        # The client reads nothing more: Azure ends up blocked in a write, and stays
        # there (the same count over many polls) with most of the stream unsent.
        seen = [-1]
        still = [0]

        def held_back() -> bool:
            if upstream.writing and upstream.sent == seen[0]:
                still[0] += 1
            else:
                seen[0], still[0] = upstream.sent, 0
            return still[0] >= 40

        await until_async(held_back, timeout=30, message="Azure was never held back")
        assert upstream.sent < upstream.total // 2, (upstream.sent, upstream.total)
        assert not upstream.done.is_set()

        body = await asyncio.wait_for(_read_to_end(reader), 60)
        writer.close()
        data = b"".join(_dechunked(body))
        assert data.count(b'"content":"' + WORD.encode() + b'"') == FRAMES
        assert data.endswith(b"data: [DONE]\n\n")
        assert upstream.done.wait(10)


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    tail = b""
    while not tail.endswith(b"\r\n0\r\n\r\n"):
        piece = await reader.read(1 << 20)
        assert piece, "the stream ended before its last chunk"
        pieces.append(piece)
        tail = (tail + piece)[-16:]
    return b"".join(pieces)


def _dechunked(body: bytes) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        if size == 0:
            return out
        out.append(body[end + 2:end + 2 + size])
        at = end + 2 + size + 2
