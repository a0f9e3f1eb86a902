"""A host of several addresses whose first drops packets (an IPv6 route to nowhere) is
reached through the next after 250 ms (RFC 8305), over HTTP/1.1 and HTTP/2, not after
connect_timeout on every new connection with the next never tried; `dial` itself with
plain coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.dial import NEXT_ADDRESS_AFTER, dial
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import Transport, UpstreamRequest
from tests.e2e.h2raw import RawH2Server, frame, head_block


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 whose listener's accept queue is full: Linux drops further
    SYNs, so a connect there hangs as toward an unreachable address."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for filler in fillers:
        filler.close()
    hole.close()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


async def _second_address(protocol: str, port: int) -> asyncio.Server:
    """The good server, on 127.0.0.2 and the black hole's port."""
    if protocol == "http1":
        return await asyncio.start_server(_answer, "127.0.0.2", port)
    h2 = RawH2Server(lambda sid: frame(1, 4, sid, head_block((":status", "200")))
                     + frame(0, 1, sid, b"ok"))
    await h2.start("127.0.0.2", port)
    assert h2.server is not None
    return h2.server


@pytest.mark.parametrize("protocol", ["http1", "h2"])
async def test_an_address_dropping_packets_is_passed_for_the_next(
        black_hole: int, protocol: str) -> None:
    good = await _second_address(protocol, black_hole)

    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.2")]

    settings = UpstreamSettings(connect_timeout=3, http2=protocol == "h2")
    transport: Transport = (FastTransport(settings, resolver=resolver) if protocol == "http1"
                            else H2Transport(settings, resolver=resolver))
    started = time.monotonic()
    try:
        response = await transport.send(
            UpstreamRequest("GET", f"http://azure.example:{black_hole}/x", {}))
        assert await response.read(10) == b"ok"  # on main: UpstreamTimeout after 3 s
        response.close()
        assert time.monotonic() - started < 1.5
    finally:
        await transport.close()
        good.close()


class _Link:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False


class _Dialer:
    """Connects to each address after its delay, or fails (None: never answers)."""

    def __init__(self, delays: dict[str, float | None], failing: set[str] = frozenset()
                 ) -> None:
        self.delays = delays
        self.failing = failing
        self.links: list[_Link] = []
        self.tried: list[tuple[str, float]] = []
        self.started = time.monotonic()

    async def connect(self, address: str) -> _Link:
        self.tried.append((address, time.monotonic() - self.started))
        delay = self.delays[address]
        await asyncio.sleep(60 if delay is None else delay)
        if address in self.failing:
            raise ConnectionRefusedError(address)
        link = _Link(address)
        self.links.append(link)
        return link

    @staticmethod
    def close(link: _Link) -> None:
        link.closed = True


_TWO = [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]


async def test_a_failure_has_the_next_address_tried_at_once() -> None:
    dialer = _Dialer({"::1": 0.0, "127.0.0.1": 0.0}, failing={"::1"})
    link = await dial(asyncio.get_running_loop(), _TWO, dialer.connect, dialer.close)
    assert link.address == "127.0.0.1" and not link.closed
    assert dialer.tried[1][1] < NEXT_ADDRESS_AFTER / 2


async def test_a_slow_first_address_still_wins_if_it_connects_first() -> None:
    dialer = _Dialer({"::1": NEXT_ADDRESS_AFTER + 0.05, "127.0.0.1": 5.0})
    link = await dial(asyncio.get_running_loop(), _TWO, dialer.connect, dialer.close)
    assert link.address == "::1"
    assert [address for address, _ in dialer.tried] == ["::1", "127.0.0.1"]
    await asyncio.sleep(0.01)
    assert dialer.links == [link]
    # The rival (5 s from connecting) was cancelled, not left running (revh1: the line
    # above held whether it was or not).
    assert not [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


async def test_every_address_failing_raises_the_last_failure() -> None:
    dialer = _Dialer({"::1": 0.0, "127.0.0.1": 0.0}, failing={"::1", "127.0.0.1"})
    with pytest.raises(ConnectionRefusedError, match=r"127\.0\.0\.1"):
        await dial(asyncio.get_running_loop(), _TWO, dialer.connect, dialer.close)


async def test_a_caller_giving_up_cancels_every_attempt() -> None:
    dialer = _Dialer({"::1": None, "127.0.0.1": None})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(NEXT_ADDRESS_AFTER * 2):
            await dial(asyncio.get_running_loop(), _TWO, dialer.connect, dialer.close)
    assert len(dialer.tried) == 2
    await asyncio.sleep(0.01)
    assert not [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


async def test_two_connected_at_once_keep_one_and_close_the_other() -> None:
    go = asyncio.Event()
    made: list[_Link] = []

    async def connect(address: str) -> _Link:
        await go.wait()  # both answer in the same turn of the loop
        made.append(_Link(address))
        return made[-1]

    dialing = asyncio.ensure_future(
        dial(asyncio.get_running_loop(), _TWO, connect, _Dialer.close))
    await asyncio.sleep(NEXT_ADDRESS_AFTER + 0.05)  # the second attempt is under way
    go.set()
    link = await dialing
    assert len(made) == 2
    assert [other.closed for other in made if other is not link] == [True]
    assert not link.closed
