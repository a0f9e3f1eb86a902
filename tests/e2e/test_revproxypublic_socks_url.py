"""A SOCKS URL given as `upstream.http_proxy` (check_proxy takes one, as Go's HTTP_PROXY
does; it worked through aiohttp-socks before session 28) still reaches Azure through a
real SOCKS5 proxy (pproxy): proxypublic gave every http_proxy to FastTransport, which
sent the SOCKS proxy an HTTP CONNECT, a 502 on every request. (Review of proxypublic.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.processes import pproxy, running
from tests.unit.test_upstream_nodelay import _answer


async def test_a_socks_url_as_http_proxy_reaches_azure(reserve_port: Callable[[], int]) -> None:
    azure = await asyncio.start_server(_answer, "127.0.0.1", 0)
    azure_port = azure.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{azure_port}/openai/x"
    port = reserve_port()
    with running(pproxy(f"socks5://127.0.0.1:{port}"), port=port) as proxy:
        transport = transport_for(UpstreamSettings(
            connect_timeout=10, http_proxy=f"socks5://127.0.0.1:{port}"))
        try:
            response = await transport.send(UpstreamRequest("GET", url, {}))
            assert (response.status, await response.read(10)) == (200, b"ok")
            response.close()
        finally:
            await transport.close()
        azure.close()
        seen = proxy.output()
        assert f"127.0.0.1:{azure_port}" in seen, seen  # it went through the proxy (pproxy -v)
