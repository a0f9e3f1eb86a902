"""A streamed answer whose client is gone in the ways the connection's `gone` flag does
not say at once (review of the httpframe branch, /work/notes/s9/reviewhttp-findings.md).

- A reset: the transport that fails a read or a write with it closes itself and reports
  the loss a turn of the loop later; a stream's `end()` in that turn must not report the
  answer as delivered.
- A stream the handler returns without ending it, after the client left: the engine's
  own `end()` fails, and the connection must close (quietly), not be left to a serving
  task that died with the exception.

Real sockets on loopback, each step waiting on an event or a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from azure_openai_proxy.http.interface import Answer, ClientDisconnected, HttpRequest, Reply
from azure_openai_proxy.http.request import FastStream
from azure_openai_proxy.http.server import FastServer, serve_fast
from tests.support import bound_socket
from tests.waiting import until_async


class _App:
    """One route: `handler(request)`."""

    def __init__(self, handler: Callable[[HttpRequest], Coroutine[Any, Any, Reply]]) -> None:
        self.handler = handler

    def __call__(self, request: HttpRequest) -> Coroutine[Any, Any, Reply]:
        return self.handler(request)

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        return Answer(status, {"content-type": "text/plain"}, message.encode())

    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...
    async def cleanup(self) -> None: ...


def _run(loop_kind: str, main: Coroutine[Any, Any, None]) -> None:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


def _reset(client: socket.socket) -> None:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_an_end_after_a_reset_the_transport_found_is_not_delivered(loop_kind: str) -> None:
    _run(loop_kind, _reset_then_end())


async def _reset_then_end() -> None:
    first = threading.Event()  # set by the handler, read by the client's thread
    was_reset = threading.Event()
    outcome: list[str] = []

    async def handler(request: HttpRequest) -> Reply:
        out = request.stream(200, {"content-type": "text/event-stream"})
        assert isinstance(out, FastStream)  # send(): the engine's own, beyond the interface
        await out.write(b"data: first\n\n")
        first.set()
        # Block the loop until the client has reset the connection, so the loop reads
        # nothing meanwhile: the writes below meet the reset themselves.
        assert was_reset.wait(10)
        for i in range(8):
            out.send(b"data: %d\n\n" % i)  # the first fails on the socket; the rest vanish
        try:
            await out.end(b"data: [DONE]\n\n")
        except ClientDisconnected:
            outcome.append("client gone")
            raise
        outcome.append("delivered")
        return out

    sock = bound_socket()
    server = await serve_fast(_App(handler), None, 0, sock=sock)
    client = socket.create_connection(sock.getsockname())
    try:
        def reset_when_read() -> None:
            if not first.wait(10):
                return
            client.recv(1)  # the rest left unread: the close is a reset
            _reset(client)
            was_reset.set()

        thread = threading.Thread(target=reset_when_read)
        thread.start()
        client.sendall(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await until_async(lambda: outcome, 10, "the handler never ended")
        thread.join(10)
        assert outcome == ["client gone"]
        await until_async(lambda: not server.connections, 10, "the connection was not lost")
    finally:
        client.close()
        server.close()
        await server.wait_closed()


_SMALL_BUFFER = 4096


async def test_a_stream_returned_unended_after_the_client_left_closes_its_connection(
) -> None:
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    returned = asyncio.Event()

    async def handler(request: HttpRequest) -> Reply:
        out = request.stream(200, {"content-type": "text/event-stream"})
        await out.write(b"data: " + b"x" * 40_000 + b"\n\n")  # more than the sockets hold
        await go.wait()
        with contextlib.suppress(ClientDisconnected):
            await out.write(b"data: more\n\n")
        returned.set()
        return out  # not ended: the engine ends it (and finds the client gone)

    listening = bound_socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_BUFFER)
    server: FastServer = await serve_fast(_App(handler), None, 0, sock=listening)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_BUFFER)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, listening.getsockname())
        await loop.sock_sendall(client, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")

        def holding() -> Any:
            for conn in server.connections:
                transport = conn.transport
                if transport is not None and transport.get_write_buffer_size() > 0:
                    return conn
            return None

        await until_async(holding, 10, "the transport never held part of the frame")
        conn = holding()
        # The client half-closes and never reads: the transport closes, keeping its bytes,
        # so the loss is not reported and the handler is not cancelled.
        client.shutdown(socket.SHUT_WR)
        await until_async(lambda: conn.gone, 10, "the FIN was not read")
        go.set()
        await asyncio.wait_for(returned.wait(), 10)
        await until_async(lambda: conn.task is None, 10, "the serving task did not end")
        # Closed by the engine: the sweep cuts a closed connection that reads nothing
        # after send_timeout; one left open (nothing waited for) would stay forever.
        assert conn.closed
    finally:
        _reset(client)
        server.close()
        await server.wait_closed()
