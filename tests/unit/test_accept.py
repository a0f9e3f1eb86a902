"""FastServer takes every connection waiting in its accept queue at each wake-up, on
uvloop as on asyncio's loop (issue 15: libuv accepts one connection per loop iteration
since 1.45, so a worker whose iterations were long with thousands of open streams
accepted far fewer connections a second than arrived, and new streams waited silently
in the kernel's queue until their clients gave up)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.http.accept import ACCEPT_PER_WAKE, listening_sockets
from azure_openai_proxy.http.server import FastServer, serve_fast
from tests.http_app import EngineTestApp, Events
from tests.support import bound_socket

_WAITING = 64
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
_LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def _iterations_to_accept(waiting: int) -> int:
    """Loop iterations from the first wake-up until `waiting` connections, all queued in
    the kernel before the loop looked, are every one being served."""
    return len(await _served_per_iteration(waiting))


async def _served_per_iteration(waiting: int) -> list[int]:
    """The connections being served at each loop iteration until all `waiting` are."""
    sock = bound_socket()
    fast = await serve_fast(EngineTestApp(Events()), None, 0, sock=sock)
    port = sock.getsockname()[1]
    # Blocking connects: the kernel completes each handshake into the accept queue
    # while the loop is held here.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(waiting)]
    try:
        return await _count_iterations(fast, waiting)
    finally:
        for client in clients:
            client.close()
        fast.close()
        await fast.wait_closed()


async def _count_iterations(fast: FastServer, waiting: int) -> list[int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    served: list[int] = []

    def turn() -> None:  # once per loop iteration: a callback that schedules itself
        served.append(len(fast.connections))
        if served[-1] >= waiting or len(served) >= 10 * waiting:
            done.set_result(None)
        else:
            loop.call_soon(turn)

    loop.call_soon(turn)
    await done
    return served


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_the_waiting_connections_are_taken_at_once(loop_name: str) -> None:
    turns = _LOOPS[loop_name](_iterations_to_accept(_WAITING))
    # One wake-up accepts them all and makes their protocols; `connection_made` runs at
    # the next turn (2 turns on uvloop, 3 on asyncio: as for one connection before).
    assert turns <= 3, f"{_WAITING} waiting connections took {turns} loop iterations"


async def test_the_server_binds_its_own_sockets_and_serves_on_them() -> None:
    fast = await serve_fast(EngineTestApp(Events()), "127.0.0.1", 0)
    try:
        (sock,) = fast.sockets
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 ")
        writer.close()
    finally:
        fast.close()
        await fast.wait_closed()
    assert sock.fileno() == -1  # closed with the server


def test_a_port_in_use_is_an_error_at_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", port)


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_a_wake_up_takes_a_bounded_number(loop_name: str) -> None:
    """A long queue is taken over a few turns, `ACCEPT_PER_WAKE` at a time, so that a
    turn never holds the set-up of thousands of streams."""
    waiting = 2 * ACCEPT_PER_WAKE + 10
    served = _LOOPS[loop_name](_served_per_iteration(waiting))
    steps = [after - before for before, after in zip([0, *served], served, strict=False)]
    assert served[-1] == waiting
    assert max(steps) <= ACCEPT_PER_WAKE
    assert len(served) <= 6, served  # 3 wake-ups, and a turn or two for connection_made


async def _accepted_socket_options() -> tuple[int, float | None]:
    # The server's own listening socket (its protocol is IPPROTO_TCP, which asyncio's loop
    # checks before setting TCP_NODELAY; uvloop sets it on any TCP socket).
    fast = await serve_fast(EngineTestApp(Events()), "127.0.0.1", 0)
    (sock,) = fast.sockets
    client = socket.create_connection(sock.getsockname())
    try:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def look() -> None:
            if fast.connections:
                done.set_result(None)
            else:
                loop.call_soon(look)

        loop.call_soon(look)
        await done
        [conn] = fast.connections
        assert conn.transport is not None
        accepted = conn.transport.get_extra_info("socket")
        return accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), accepted.gettimeout()
    finally:
        client.close()
        fast.close()
        await fast.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_accepted_connections_send_without_nagles_delay(loop_name: str) -> None:
    # The listener sets neither TCP_NODELAY nor non-blocking mode itself (two system calls
    # a connection): connect_accepted_socket does both, on uvloop as on asyncio's loop.
    nodelay, timeout = _LOOPS[loop_name](_accepted_socket_options())
    assert nodelay != 0
    assert timeout == 0.0  # non-blocking


async def _handed_socket_options() -> int:
    # A socket handed over (`sock=`), made by `socket.socket()`: its protocol is 0, so
    # asyncio's loop would not set TCP_NODELAY on the connections it accepts.
    sock = bound_socket()
    assert sock.proto == 0
    fast = await serve_fast(EngineTestApp(Events()), None, 0, sock=sock)
    client = socket.create_connection(sock.getsockname())
    try:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def look() -> None:
            if fast.connections:
                done.set_result(None)
            else:
                loop.call_soon(look)

        loop.call_soon(look)
        await done
        [conn] = fast.connections
        assert conn.transport is not None
        accepted = conn.transport.get_extra_info("socket")
        assert accepted.gettimeout() == 0.0  # non-blocking
        return int(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        client.close()
        fast.close()
        await fast.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(_LOOPS))
def test_connections_on_a_handed_socket_send_without_nagles_delay(loop_name: str) -> None:
    assert _LOOPS[loop_name](_handed_socket_options()) != 0
