"""Host names resolved once per `dns_cache_ttl` seconds, for FastTransport's new
connections.

Without it every new connection to Azure asks the system resolver (a thread of the
loop's executor, and often a network round trip): a burst of new connections, after an
idle spell or when the pool grows, asks as many times for the same name. Here
concurrent lookups of one host share a single one; a success is reused for the TTL;
a failure is never kept (the next connection asks again).

The resolver is a plain async function, so a test can count its calls or name its
own addresses; the default is the loop's `getaddrinfo`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable

__all__ = ["DnsCache", "Resolver", "system_resolver"]

# (host, port) -> the addresses to try, in order: (family, ip).
Resolver = Callable[[str, int], Awaitable[list[tuple[int, str]]]]

_MAX_HOSTS = 256  # endpoints come from the configuration: a few, not thousands


async def system_resolver(host: str, port: int) -> list[tuple[int, str]]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]


class DnsCache:
    """Addresses per (host, port), each kept `ttl` seconds by the loop's clock (0: not
    kept, though concurrent lookups are still shared)."""

    def __init__(
        self, ttl: float, resolver: Resolver = system_resolver,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._ttl = ttl
        self._resolver = resolver
        self._clock = clock  # None: the running loop's
        self._known: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[list[tuple[int, str]]]] = {}

    async def addresses(self, host: str, port: int) -> list[tuple[int, str]]:
        """Where `host` is: from the cache, a lookup in progress, or a new lookup. An IP
        literal is its own answer. Raises the resolver's `OSError` (`socket.gaierror`)."""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        key = (host, port)
        loop = asyncio.get_running_loop()
        known = self._known.get(key)
        if known is not None and known[0] > (
                self._clock() if self._clock is not None else loop.time()):
            return known[1]
        task = self._pending.get(key)
        if task is None:
            task = self._pending[key] = loop.create_task(self._lookup(key))
            task.add_done_callback(_retrieved)
        # Shielded: a caller that gives up does not cancel the others' lookup.
        return await asyncio.shield(task)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _lookup(self, key: tuple[str, int]) -> list[tuple[int, str]]:
        try:
            found = await self._resolver(*key)
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, "no address")
            if self._ttl > 0:
                if len(self._known) >= _MAX_HOSTS:
                    self._known.clear()
                self._known[key] = (self._now() + self._ttl, found)
            return found
        finally:
            del self._pending[key]


@functools.lru_cache(maxsize=_MAX_HOSTS)  # parsed on every new connection otherwise
def _literal(host: str) -> tuple[int, str] | None:
    """The address, when `host` is an IP literal (parsing one costs 4-8 µs, a name's
    two failed attempts the most)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if address.version == 6 else socket.AF_INET, host)


def _retrieved(task: asyncio.Task[list[tuple[int, str]]]) -> None:
    # Every caller may have given up: the failure is theirs to see, not the loop's log.
    if not task.cancelled():
        task.exception()
