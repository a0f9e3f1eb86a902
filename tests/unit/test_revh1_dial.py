"""Review of the address race (fast/dial.py): the families take turns (RFC 8305 4), the
failure raised when every address fails is not kept in a reference cycle, and no attempt's
socket outlives the race (FastTransport over real sockets: a winner beside a silent
address, every address refusing, the caller cancelled mid-race, connect_timeout ending
it), on asyncio's loop and uvloop's."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.dial import dial
from azure_openai_proxy.upstream.transport import UpstreamRequest

_V6, _V4 = socket.AF_INET6, socket.AF_INET


class _Refused(ConnectionRefusedError):
    """Weakly referable, to see when a failure is freed."""


async def test_the_families_take_turns_the_first_addresses_first() -> None:
    """getaddrinfo puts every IPv6 address first: two silent ones held IPv4 back for two
    delays (on main the order was kept as given)."""
    tried: list[str] = []

    async def connect(address: str) -> None:
        tried.append(address)
        raise ConnectionRefusedError(address)

    addresses = [(_V6, "::1"), (_V6, "::2"), (_V6, "::3"), (_V4, "10.0.0.1"),
                 (_V4, "10.0.0.2")]
    with pytest.raises(ConnectionRefusedError):
        await dial(asyncio.get_running_loop(), addresses, connect, lambda _: None)
    assert tried == ["::1", "10.0.0.1", "::2", "10.0.0.2", "::3"]


async def test_the_failure_raised_is_freed_without_the_garbage_collector() -> None:
    """On main the tasks of the last attempts stayed in dial's frame, which the failure's
    traceback holds: failure, frames and tasks lived until a full collection."""
    made: list[weakref.ref[_Refused]] = []

    def refused(address: str) -> _Refused:
        failure = _Refused(address)
        made.append(weakref.ref(failure))
        return failure

    async def connect(address: str) -> None:
        await asyncio.sleep(0)
        raise refused(address)

    gc.collect()
    gc.disable()
    try:
        with pytest.raises(_Refused):
            await dial(asyncio.get_running_loop(), [(_V6, "::1"), (_V4, "127.0.0.1")],
                       connect, lambda _: None)
        await asyncio.sleep(0)
        assert len(made) == 2
        assert [ref() for ref in made] == [None, None]
    finally:
        gc.enable()


@contextlib.contextmanager
def _silent(host: str, port: int) -> Iterator[None]:
    """A listener on host:port whose accept queue is full: Linux drops further SYNs, so
    a connect there hangs as toward an address dropping packets."""
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind((host, port))
    hole.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect((host, port))
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield
    finally:
        for sock in (*fillers, hole):
            sock.close()


def _descriptors() -> int:
    """The process's open sockets: only sockets, as a thread of another test still
    running beside this one (a ledger writer noticing its database gone) opens and
    closes files, which made a count of every descriptor read "left -5" (CI, session 29)."""
    sockets = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            sockets += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return sockets


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


async def _race(port: int) -> list[str]:
    """What each case did, and whether descriptors were left open after it."""
    good = await asyncio.start_server(_answer, "127.0.0.2", port)
    outcomes: list[str] = []

    async def case(addresses: list[str], timeout: float = 3.0, cancel_after: float = 0.0
                   ) -> None:
        async def resolver(host: str, port: int) -> list[tuple[int, str]]:
            return [(_V4, address) for address in addresses]

        transport = FastTransport(UpstreamSettings(connect_timeout=timeout),
                                  resolver=resolver)
        before = _descriptors()
        sending = asyncio.ensure_future(transport.send(
            UpstreamRequest("GET", f"http://azure.example:{port}/x", {})))
        if cancel_after:
            await asyncio.sleep(cancel_after)
            sending.cancel()
        try:
            response = await sending
            outcome = repr(await response.read(10))
            response.close()
        except (UpstreamUnreachable, UpstreamTimeout) as exc:
            outcome = f"{type(exc).__name__} sent={exc.request_sent}"
        except asyncio.CancelledError:
            outcome = "cancelled"
        await transport.close()
        for _ in range(5):  # closed transports let go of their sockets a turn later
            await asyncio.sleep(0.01)
        outcomes.append(f"{outcome} left {_descriptors() - before}")

    try:
        await case(["127.0.0.1", "127.0.0.2"])  # the first silent: the second wins
        await case(["127.0.0.4", "127.0.0.5"])  # both refuse
        await case(["127.0.0.1", "127.0.0.3"], cancel_after=0.4)  # the client left
        await case(["127.0.0.1", "127.0.0.3"], timeout=0.5)  # connect_timeout ends it
    finally:
        good.close()
    return outcomes


# Each loop the gateway may run on (uvloop where installed).
ON_BOTH_LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run],
                                        ids=["asyncio", "uvloop"])


def beside_silent(run: Callable[..., list[str]], port: int,
                  race: Callable[[int], Coroutine[Any, Any, list[str]]]) -> list[str]:
    """`race(port)`'s outcomes, run by `run` while 127.0.0.1 and 127.0.0.3 are silent on
    `port`."""
    with _silent("127.0.0.1", port), _silent("127.0.0.3", port):
        return run(race(port))


@ON_BOTH_LOOPS
def test_no_attempt_leaves_a_socket_open(
        run: Callable[..., list[str]], reserve_port: Callable[[], int]) -> None:
    assert beside_silent(run, reserve_port(), _race) == [
        "b'ok' left 0",
        "UpstreamUnreachable sent=False left 0",
        "cancelled left 0",
        "UpstreamTimeout sent=False left 0",
    ]
