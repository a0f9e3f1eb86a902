"""`H2Transport` over TLS against a server that does not choose h2 by ALPN: the origin is
served by HTTP/1.1 (FastTransport) with a context offering only http/1.1, even when a
later connection reaches a server that would prefer h2 (issue 15's review, finding 10);
and an HTTP/1.1 server is never sent HTTP/2's preface."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.unit.test_fasttransport import _self_signed


class _Http1(asyncio.Protocol):
    """Answers HTTP/1.1 on a connection whose ALPN chose http/1.1 (or none); an h2
    connection's first bytes are kept and it is closed."""

    def __init__(self, first: list[bytes]) -> None:
        self.first = first
        self.transport: Any = None
        self.seen = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.seen:
            self.seen = True
            self.first.append(data[:16])
        if self.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2":
            self.transport.close()
        elif data.startswith(b"GET"):
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        else:
            self.transport.close()


async def test_the_http1_fallback_never_offers_h2(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    def server_context(alpn: list[str]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(alpn)
        return context
    h1only, h2first = server_context(["http/1.1"]), server_context(["h2", "http/1.1"])
    handshakes = 0

    def sni(tls: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        nonlocal handshakes
        handshakes += 1  # the first connection finds HTTP/1.1 only, later ones h2 first
        tls.context = h1only if handshakes == 1 else h2first
    h1only.sni_callback = sni  # type: ignore[assignment]
    first: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: _Http1(first), "127.0.0.1", 0, ssl=h1only)
    port = server.sockets[0].getsockname()[1]
    transport = H2Transport(
        UpstreamSettings(http2=True, read_timeout=2.0),
        ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)))
    for _ in range(2):
        response = await transport.send(UpstreamRequest("GET", f"https://localhost:{port}/x", {}))
        assert await response.read(100) == b"ok"
        response.close()
        assert transport._http1 is not None
        for pool in transport._http1._pools.values():  # the next request connects anew
            pool.retire()
    assert handshakes == 3  # HTTP/2's probe, then two of the fallback's
    assert not any(data.startswith(b"PRI") for data in first)  # no preface to HTTP/1.1
    await transport.close()
    server.close()
