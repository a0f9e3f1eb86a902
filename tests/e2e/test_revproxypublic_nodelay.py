"""TCP_NODELAY on FastTransport's connections through an HTTP proxy's tunnel (session 28
moved them from aiohttp-socks to tunnelled.py: a socket dialled by aiohappyeyeballs,
CONNECT written on it, then handed to the loop's `create_connection(sock=...)`), on
both loops the gateway runs on, plain and under TLS: the request's head and body go in
one write and its answer is awaited, so Nagle's delay would sit on every request whose
write the kernel split. (Review of proxypublic; test_upstream_nodelay.py checks direct
connections.)"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from tests.e2e.piecemeal import piecemeal_proxy
from tests.support import bound_socket
from tests.unit.test_fasttransport import _self_signed
from tests.unit.test_upstream_nodelay import _answer, socket_after_a_request

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def _nodelay_through_the_tunnel(server_tls: ssl.SSLContext | None,
                                      client_tls: ssl.SSLContext | None) -> int:
    server = await asyncio.start_server(_answer, sock=bound_socket(), ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if server_tls is not None else "http"
    async with piecemeal_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n") as proxy:
        client = FastTransport(UpstreamSettings(
            connect_timeout=10, http_proxy=f"http://127.0.0.1:{proxy.port}"), ssl_context=client_tls)
        try:
            sock = await socket_after_a_request(client, f"{scheme}://localhost:{port}/")
            assert sock.getpeername()[1] == proxy.port  # the tunnel's socket, to the proxy
            return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            await client.close()
            server.close()
            if proxy.serving:
                await asyncio.wait(proxy.serving, timeout=10)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_plain_tunnelled_connection_has_nodelay(loop: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        assert runner.run(_nodelay_through_the_tunnel(None, None)) != 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_tunnelled_connection_has_nodelay(loop: str, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        assert runner.run(_nodelay_through_the_tunnel(server_tls, client_tls)) != 0
