"""FastTransport's pool through an HTTP proxy (session 28): a tunnel the proxy refuses
(a 407) frees its pool slot and its socket, so with `pool_size: 1` the next request is
refused by the proxy again, not left waiting out `pool_timeout` for a slot no
connection holds (a 503 for every request after the first failure); and the proxy's
credentials are in no message. (Review of proxypublic; test_proxypublic_tunnel.py
checks that a tunnel that works is reused.)"""

from __future__ import annotations

import asyncio
import os

import pytest

from azure_openai_proxy.errors import UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.piecemeal import piecemeal_proxy
from tests.unit.test_upstream_nodelay import _answer
from tests.waiting import until_async

SECRET = "pr0xy-s3cret"


async def test_a_refused_tunnel_frees_its_slot_and_socket() -> None:
    azure = await asyncio.start_server(_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{azure.sockets[0].getsockname()[1]}/openai/x"
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with piecemeal_proxy(refusal) as proxy:
        transport = FastTransport(UpstreamSettings(
            connect_timeout=10, pool_size=1, pool_timeout=5,
            http_proxy=f"http://alice:{SECRET}@127.0.0.1:{proxy.port}"))
        before = len(os.listdir("/proc/self/fd"))
        try:
            refused = [await _refused(transport, url) for _ in range(3)]
            assert all(not exc.request_sent and "407" in exc.message for exc in refused)
            assert not any(SECRET in exc.message for exc in refused)
            [pool] = transport._pools.values()
            assert (pool.size, len(pool.every)) == (0, 0)
            await until_async(lambda: len(os.listdir("/proc/self/fd")) <= before, 10,
                              "a socket was left open")
        finally:
            await transport.close()
            if proxy.serving:
                await asyncio.wait(proxy.serving, timeout=10)
    azure.close()
    assert len(proxy.heads) == 3  # each asked the proxy: none waited for a slot


async def _refused(transport: FastTransport, url: str) -> UpstreamUnreachable:
    with pytest.raises(UpstreamUnreachable) as caught:
        await transport.send(UpstreamRequest("POST", url, {}, b"{}"))
    return caught.value
