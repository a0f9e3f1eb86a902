"""TCP_NODELAY on FastTransport's upstream connections under uvloop, the gateway's loop:
the transport sets no option of its own (issue 15), so uvloop's TCP transport must, on a
plain connection and under TLS alike. (test_upstream_pool.py checks asyncio's loop;
test_revproxypublic_nodelay.py FastTransport's tunnels through an HTTP proxy; a SOCKS
proxy's go through aiohttp-socks, whose sockets both loops set too.)"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.support import bound_socket
from tests.unit.test_fasttransport import _self_signed

uvloop = pytest.importorskip("uvloop")


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def socket_after_a_request(client: FastTransport, url: str) -> socket.socket:
    """The socket of `client`'s one connection once a POST to `url` was answered "ok"."""
    response = await client.send(UpstreamRequest("POST", url, {}, b"{}"))
    try:
        assert await response.read(100) == b"ok"
    finally:
        response.close()
    [pool] = client._pools.values()
    [conn] = pool.every
    assert conn.transport is not None
    sock: socket.socket = conn.transport.get_extra_info("socket")
    return sock


async def _nodelay_of_a_new_connection(server_tls: ssl.SSLContext | None,
                                       client_tls: ssl.SSLContext | None) -> int:
    server = await asyncio.start_server(_answer, sock=bound_socket(), ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    client = FastTransport(UpstreamSettings(), ssl_context=client_tls)
    scheme = "https" if server_tls is not None else "http"
    try:
        sock = await socket_after_a_request(client, f"{scheme}://127.0.0.1:{port}/")
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def _on_uvloop(server_tls: ssl.SSLContext | None, client_tls: ssl.SSLContext | None) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        return runner.run(_nodelay_of_a_new_connection(server_tls, client_tls))


def test_a_plain_upstream_connection_on_uvloop_has_nodelay() -> None:
    assert _on_uvloop(None, None) != 0


def test_a_tls_upstream_connection_on_uvloop_has_nodelay(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    assert _on_uvloop(server_tls, ssl.create_default_context(cafile=str(cert))) != 0
