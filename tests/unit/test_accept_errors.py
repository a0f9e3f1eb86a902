"""An accept that fails for want of descriptors (EMFILE) pauses the listener, says so,
and serves the connection still waiting once descriptors are free again, on uvloop as
on asyncio's loop, leaving no socket open behind it (http/accept.py: the accepted socket
is made by the listener itself since session 27, so its error path is pinned here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.http.server import serve_fast
from tests.http_app import EngineTestApp, Events

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
_LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}
_ANSWER_WAIT_S = 30.0  # the listener's pause is 1 s; generous for a loaded machine


def _open_sockets() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone already
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return count


def _exhaust_descriptors() -> tuple[list[int], tuple[int, int]]:
    """Descriptors opened until the next one would fail with EMFILE (the soft limit set
    just above the highest in use): (them, the limits to put back)."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, limits[1]))
    fillers: list[int] = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    return fillers, limits


async def _answer(client: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    answer = b""
    deadline = loop.time() + _ANSWER_WAIT_S
    while loop.time() < deadline:
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        if not chunk:
            break
        answer += chunk
    return answer


async def _accept_without_descriptors() -> tuple[int, bytes, int, int]:
    """(connections served while none could be made, the waiting client's answer once
    they can, sockets open before the client and after it and its connection closed)."""
    fast = await serve_fast(EngineTestApp(Events()), "127.0.0.1", 0)
    try:
        before = _open_sockets()
        client = socket.create_connection(fast.sockets[0].getsockname())  # in the queue
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        client.setblocking(False)
        fillers, limits = _exhaust_descriptors()
        try:
            for _ in range(5):  # turns enough for the wake-up and its failed accept
                await asyncio.sleep(0.02)
            served_while_full = len(fast.connections)
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        answer = await _answer(client)
        client.close()
        while fast.connections:  # the server's side closes after its answer
            await asyncio.sleep(0.02)
        return served_while_full, answer, before, _open_sockets()
    finally:
        fast.close()
        await fast.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_out_of_descriptors_pauses_accepting_then_serves_the_waiting_connection(
        loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        served_while_full, answer, before, after = _LOOPS[loop_name](_accept_without_descriptors())
    assert served_while_full == 0
    assert "accept() failed ([Errno 24]" in caplog.text
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]  # the test app knows no /
    assert after == before  # the accepted connection's socket closed with it
