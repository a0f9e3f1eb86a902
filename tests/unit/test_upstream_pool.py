"""FastTransport's per-endpoint pool at its `pool_size`: a request waits for a slot at
most `pool_timeout` seconds, and a waiter that gives up (timed out or cancelled) neither
keeps nor takes a slot."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from azure_openai_proxy.errors import UpstreamPoolTimeout
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.pool import _HostPool
from azure_openai_proxy.upstream.transport import UpstreamRequest


class HeldUpstream:
    """Answers each request once `release` is set; counts the requests it read."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                self.arrived.set()
                await self.release.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"


@pytest.fixture
async def held() -> AsyncIterator[HeldUpstream]:
    upstream = HeldUpstream()
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    yield upstream
    upstream.release.set()
    upstream.server.close()
    await upstream.server.wait_closed()


async def read_one(client: FastTransport, url: str) -> bytes:
    response = await client.send(UpstreamRequest("POST", url, {}, b"{}"))
    try:
        return await response.read(100)
    finally:
        response.close()


async def test_a_full_pool_times_out_saying_nothing_was_sent(held: HeldUpstream) -> None:
    client = FastTransport(UpstreamSettings(pool_size=1, pool_timeout=0.05))
    first = asyncio.create_task(read_one(client, held.url))
    await held.arrived.wait()
    for _ in range(3):  # each waits its pool_timeout, then gives up
        with pytest.raises(UpstreamPoolTimeout) as caught:
            await read_one(client, held.url)
        assert caught.value.request_sent is False
        assert caught.value.http_status == 503
    assert held.requests == 1  # nothing of the waiters reached the upstream
    held.release.set()
    assert await first == b"ok"
    # No slot was kept by the waiters that left: the pool serves on, on one connection.
    assert await read_one(client, held.url) == b"ok"
    assert client.connections_in_use() == 0
    await client.close()


async def test_a_waiter_handed_a_connection_gets_it_before_its_timeout(held: HeldUpstream) -> None:
    client = FastTransport(UpstreamSettings(pool_size=1, pool_timeout=30))
    first = asyncio.create_task(read_one(client, held.url))
    await held.arrived.wait()
    second = asyncio.create_task(read_one(client, held.url))
    await asyncio.sleep(0)  # the second one is queued
    held.release.set()
    assert await first == b"ok"
    assert await second == b"ok"
    assert held.requests == 2
    await client.close()


async def test_waiters_that_give_up_leave_the_queue_and_the_slot_goes_on() -> None:
    pool = _HostPool(asyncio.get_running_loop(), "example", limit=1)
    assert pool.reserve()  # the only slot is taken
    timed_out = [asyncio.create_task(pool.wait(0.01)) for _ in range(5)]
    cancelled = asyncio.create_task(pool.wait(30))
    patient = asyncio.create_task(pool.wait(30))
    for task in timed_out:
        with pytest.raises(TimeoutError):
            await task
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert list(pool.waiters) == [w for w in pool.waiters if not w.done()]
    assert len(pool.waiters) == 1  # only the patient one: no stale waiters kept
    pool.free_slot()  # the holder lets go: its slot passes to the patient waiter
    assert await patient is None
    assert pool.size == 1
    pool.free_slot()
    assert pool.size == 0


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    pool = _HostPool(asyncio.get_running_loop(), "example", limit=1)
    assert pool.reserve()
    first = asyncio.create_task(pool.wait(30))
    second = asyncio.create_task(pool.wait(30))
    await asyncio.sleep(0)
    pool.free_slot()  # handed to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is None  # the slot went on to the next waiter
    assert pool.size == 1


async def test_an_upstream_connection_sends_without_nagles_delay(held: HeldUpstream) -> None:
    # TCP_NODELAY is the loop's own doing (asyncio's and uvloop's TCP transports set it),
    # so a new connection makes no system call of its own for it (issue 15).
    client = FastTransport(UpstreamSettings())
    held.release.set()
    assert await read_one(client, held.url) == b"ok"
    [pool] = client._pools.values()
    [conn] = pool.every
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    await client.close()
