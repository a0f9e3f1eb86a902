"""`send_timeout` is the time a client may read nothing of an answer (nginx's: between two
successive writes that make progress), not the time it may stay behind. A client on a
slow link that keeps reading a large answer (a 25 MB embeddings answer, a batch's output
file, a picture stream) was cut once its answer had been waiting in the server's buffer
for `send_timeout`, though it read all along: the sweep counted every sweep that found
the transport past its high-water mark, and that lasts until the buffer is nearly empty.

FastServer on loopback, a raw client reading at a steady pace.
"""

from __future__ import annotations

import asyncio
import socket
import time

from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from tests.support import bound_socket

_BIG = 16 * 1024 * 1024  # far more than loopback's socket buffers hold
_SEND_TIMEOUT = 1.0  # (a loaded machine's pause between two reads is not cut)


class _BigAnswer:
    """Every request gets `_BIG` bytes, whole (an `Answer`) or streamed in pieces."""

    async def __call__(self, request: HttpRequest) -> Reply:
        body = b"x" * _BIG
        if request.path == "/whole":
            return Answer(200, {"content-type": "application/octet-stream"}, body)
        out = request.stream(200, {"content-type": "application/octet-stream"})
        for start in range(0, _BIG, 256 * 1024):
            await out.write(body[start : start + 256 * 1024])
        await out.end()
        return out

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        return Answer(status, {"content-type": "text/plain"}, message.encode())

    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...
    async def cleanup(self) -> None: ...


def _slow_reader(port: int, path: str, pace: float, size: int, stop: float) -> tuple[int, float]:
    """Read the answer `size` bytes at a time every `pace` seconds: the bytes read before
    the end (the whole answer, or a cut) and the seconds it took."""
    client = socket.socket()
    client.settimeout(stop)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    started = time.monotonic()
    got = 0
    try:
        while time.monotonic() - started < stop:
            time.sleep(pace)
            data = client.recv(size)
            if not data:
                break
            got += len(data)
    except ConnectionError:
        pass
    finally:
        client.close()
    return got, time.monotonic() - started


async def _serve() -> tuple[FastServer, int]:
    sock = bound_socket()
    server = await serve_fast(_BigAnswer(), None, 0, sock=sock,
                              limits=ServerLimits(send_timeout=_SEND_TIMEOUT))
    return server, int(sock.getsockname()[1])


async def _read_slowly(path: str) -> tuple[int, float]:
    server, port = await _serve()
    try:
        # At most ~5 MB/s: the answer takes over 3 s to read, three times `send_timeout`;
        # never a pause between two reads longer than a fortieth of it.
        return await asyncio.to_thread(_slow_reader, port, path, 0.025, 128 * 1024, 20)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_reading_a_large_whole_answer_steadily_is_not_cut() -> None:
    got, took = await _read_slowly("/whole")
    assert took > 2 * _SEND_TIMEOUT  # it did stay behind for longer than send_timeout
    assert got > _BIG  # head and the whole body (on main: cut after ~1.5 s)


async def test_a_client_reading_a_large_stream_steadily_is_not_cut() -> None:
    got, took = await _read_slowly("/stream")
    assert took > 2 * _SEND_TIMEOUT
    assert got > _BIG
