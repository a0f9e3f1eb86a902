"""Name lookups for FastTransport's new connections: once per `dns_cache_ttl`, shared by
concurrent connections, failures never kept. The resolver is our own seam (a plain async
function); the connections are real, to 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.dns import DnsCache
from azure_openai_proxy.upstream.transport import UpstreamRequest

LOOPBACK = [(socket.AF_INET, "127.0.0.1")]


class CountingResolver:
    """Answers 127.0.0.1 for any name (or fails while `failing`), counting the lookups;
    holds each lookup until `gate` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, host: str, port: int) -> list[tuple[int, str]]:
        self.calls.append(host)
        await self.gate.wait()
        if self.failing:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return LOOPBACK


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_host_is_looked_up_once_per_ttl() -> None:
    resolver, clock = CountingResolver(), Clock()
    cache = DnsCache(60, resolver, clock)
    for _ in range(3):
        assert await cache.addresses("azure.example", 443) == LOOPBACK
    assert resolver.calls == ["azure.example"]
    clock.now += 59.9
    await cache.addresses("azure.example", 443)
    assert len(resolver.calls) == 1
    clock.now += 0.2
    await cache.addresses("azure.example", 443)
    assert len(resolver.calls) == 2  # expired: asked again
    await cache.addresses("other.example", 443)
    assert resolver.calls[-1] == "other.example"


async def test_ttl_zero_asks_every_time_and_ip_literals_never() -> None:
    resolver = CountingResolver()
    cache = DnsCache(0, resolver, Clock())
    for _ in range(3):
        await cache.addresses("azure.example", 443)
    assert len(resolver.calls) == 3
    assert await cache.addresses("127.0.0.1", 443) == LOOPBACK
    assert (await cache.addresses("::1", 443))[0] == (socket.AF_INET6, "::1")
    assert len(resolver.calls) == 3


async def test_concurrent_lookups_share_one_and_a_caller_leaving_does_not_cancel_it() -> None:
    resolver = CountingResolver()
    resolver.gate.clear()
    cache = DnsCache(60, resolver, Clock())
    callers = [asyncio.create_task(cache.addresses("azure.example", 443)) for _ in range(10)]
    await asyncio.sleep(0)
    callers[0].cancel()
    resolver.gate.set()
    results = await asyncio.gather(*callers[1:])
    assert results == [LOOPBACK] * 9
    assert resolver.calls == ["azure.example"]


async def test_a_failure_is_shared_but_never_cached() -> None:
    resolver = CountingResolver()
    resolver.failing = True
    cache = DnsCache(60, resolver, Clock())
    outcomes = await asyncio.gather(*(cache.addresses("azure.example", 443) for _ in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, socket.gaierror) for o in outcomes)
    assert len(resolver.calls) == 1
    resolver.failing = False
    assert await cache.addresses("azure.example", 443) == LOOPBACK  # asked again at once
    assert len(resolver.calls) == 2


@pytest.fixture
async def closing_server() -> AsyncIterator[int]:
    """Answers one request per connection, then closes it: every request connects anew."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def fetch(client: FastTransport, url: str) -> bytes:
    response = await client.send(UpstreamRequest("GET", url, {}))
    try:
        return await response.read(10)
    finally:
        response.close()


@pytest.mark.parametrize(("ttl", "lookups"), [(60.0, 1), (0.0, 3)])
async def test_new_connections_use_the_cache(closing_server: int, ttl: float, lookups: int) -> None:
    resolver = CountingResolver()
    client = FastTransport(UpstreamSettings(dns_cache_ttl=ttl), resolver=resolver)
    for _ in range(3):  # three connections, one after another
        assert await fetch(client, f"http://localhost:{closing_server}/") == b"ok"
    assert resolver.calls == ["localhost"] * lookups
    await client.close()


async def test_concurrent_new_connections_share_one_lookup(closing_server: int) -> None:
    resolver = CountingResolver()
    resolver.gate.clear()
    client = FastTransport(UpstreamSettings(dns_cache_ttl=0), resolver=resolver)
    requests = [asyncio.create_task(fetch(client, f"http://azure.test:{closing_server}/"))
                for _ in range(5)]
    await asyncio.sleep(0)
    resolver.gate.set()
    assert await asyncio.gather(*requests) == [b"ok"] * 5
    assert resolver.calls == ["azure.test"]
    await client.close()


async def test_a_failed_lookup_is_unreachable_and_not_sent(closing_server: int) -> None:
    resolver = CountingResolver()
    resolver.failing = True
    client = FastTransport(UpstreamSettings(), resolver=resolver)
    with pytest.raises(UpstreamUnreachable, match="DNS lookup failed") as caught:
        await fetch(client, f"http://azure.test:{closing_server}/")
    assert caught.value.request_sent is False
    resolver.failing = False
    assert await fetch(client, f"http://azure.test:{closing_server}/") == b"ok"
    await client.close()


async def test_whether_a_host_is_an_ip_literal_is_decided_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsing costs 4-8 µs, on every new connection before (issue 15).
    parsed: list[str] = []
    parse = ipaddress.ip_address

    def counted(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        parsed.append(host)
        return parse(host)

    monkeypatch.setattr(ipaddress, "ip_address", counted)
    cache = DnsCache(60, CountingResolver(), Clock())
    for _ in range(3):
        assert await cache.addresses("10.9.8.7", 443) == [(socket.AF_INET, "10.9.8.7")]
        assert await cache.addresses("decided-once.example", 443) == LOOPBACK
    assert parsed == ["10.9.8.7", "decided-once.example"]
