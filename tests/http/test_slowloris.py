"""Slowloris: 500 connections each trickling a request head one byte a second, against
a server whose head deadline is 2.5 s. Meanwhile a normal request is answered within
100 ms (the one timed assertion, asked for by the issue); every trickling connection is
cut by the head deadline with a 408; and the server process's open file descriptors
come back to what they were before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import bound_socket

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 500
HEAD_TIMEOUT = 2.5

# The server: EngineTestApp on FastServer, listening on the socket the test bound.
SERVER = f"""
import asyncio, socket, sys
from azure_openai_proxy.http.server import ServerLimits, serve_fast
from tests.http_app import EngineTestApp, Events

async def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    await serve_fast(EngineTestApp(Events()), None, 0, sock=sock, backlog=1024,
                     limits=ServerLimits(head_timeout={HEAD_TIMEOUT}, body_timeout=30,
                                         keepalive_timeout=30))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def server() -> Iterator[tuple[int, int]]:
    """(pid, port) of the server process, stopped at the end."""
    sock = bound_socket()
    child = subprocess.Popen([sys.executable, "-c", SERVER, str(sock.fileno())], cwd=ROOT,
                             pass_fds=[sock.fileno()], stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        yield child.pid, int(sock.getsockname()[1])
    finally:
        sock.close()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(autouse=True)
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * CONNECTIONS))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def trickler(port: int, started: asyncio.Event, count: list[int]) -> bytes:
    """Open a connection and trickle a head (one that would never end in time) a byte a
    second; what the server answered, once it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    count.append(1)
    if len(count) == CONNECTIONS:
        started.set()
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    answer = asyncio.ensure_future(reader.read())
    try:
        for byte in head:  # bounded: 50 bytes at most
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
            done, _ = await asyncio.wait([answer], timeout=1.0)
            if done:
                break
        return await asyncio.wait_for(answer, 10)
    finally:
        writer.close()


async def timed_request(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\nhi"), 10)
    spent = time.perf_counter() - started
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200 ")
    return spent


async def test_slowloris_is_cut_by_the_head_deadline_and_others_are_served(
        server: tuple[int, int]) -> None:
    pid, port = server
    await timed_request(port)  # warm: the first request imports and allocates
    baseline = open_fds(pid)  # (with the warm-up's connection, maybe, not closed yet)
    started, count = asyncio.Event(), []
    tricklers = [asyncio.create_task(trickler(port, started, count)) for _ in range(CONNECTIONS)]
    await asyncio.wait_for(started.wait(), 20)
    assert open_fds(pid) >= baseline + CONNECTIONS // 2  # they are open on the server

    spent = [await timed_request(port) for _ in range(5)]
    assert statistics.median(spent) < 0.1, spent

    answers = await asyncio.wait_for(asyncio.gather(*tricklers), 20)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:20] for a in answers}
    async with asyncio.timeout(10):  # the server closes its ends: back to the baseline
        while open_fds(pid) > baseline:
            await asyncio.sleep(0.05)
    assert open_fds(pid) <= baseline
