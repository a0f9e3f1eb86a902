"""What `send_timeout` still cuts since a slow reader is no longer cut (slowread's
9e2480a): progress is what the kernel takes from the server's buffer, not a read the
client makes. A client that reads nothing, or a byte now and then (its socket's buffers
full: the kernel takes nothing more until it has read a good part of them), holds its
connection and its answer's upstream no longer than `send_timeout`.

FastServer on loopback (`test_slowread_send_timeout`'s), a raw client."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from tests.unit.test_slowread_send_timeout import _SEND_TIMEOUT, _serve


def _trickle(port: int, path: str, size: int, pace: float, stop: threading.Event) -> None:
    """Read `size` bytes every `pace` seconds (none if 0) until `stop` or the server is
    found gone."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        while not stop.wait(pace):
            if size:
                client.recv(size)
            else:  # nothing read: the server's end is seen without taking its bytes
                try:
                    client.send(b"\r\n")  # (an empty line between requests, RFC 9112)
                except ConnectionError:
                    break
    except ConnectionError:
        pass
    finally:
        client.close()


async def _cut_after(path: str, size: int, pace: float) -> tuple[float, int]:
    """The server's connection's lifetime for that client, and the connections left."""
    server, port = await _serve()
    try:
        stop = threading.Event()
        reader = asyncio.create_task(asyncio.to_thread(_trickle, port, path, size, pace, stop))
        started = time.monotonic()
        while not server.connections and time.monotonic() - started < 5:
            await asyncio.sleep(0.01)
        while server.connections and time.monotonic() - started < 10 * _SEND_TIMEOUT:
            await asyncio.sleep(0.05)
        lived, left = time.monotonic() - started, len(server.connections)
        stop.set()
        await reader
        return lived, left
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("path", ["/stream", "/whole"])
@pytest.mark.parametrize(("size", "pace"), [(0, 0.1), (1, 0.1), (64, 0.1)],
                         ids=["nothing", "a byte", "64 bytes"])
async def test_a_client_reading_nothing_or_a_few_bytes_is_cut_at_send_timeout(
        path: str, size: int, pace: float) -> None:
    lived, left = await _cut_after(path, size, pace)
    assert left == 0  # cut, not held while it trickles
    assert _SEND_TIMEOUT < lived < 4 * _SEND_TIMEOUT
