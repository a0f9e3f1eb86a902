"""A fully qualified https:// endpoint (`NAME.openai.azure.com.`, DNS's root) through our
own clients (no proxy): TLS names the host without its trailing dot, in SNI and in the
certificate check, as aiohttp's client, the realtime sockets (websocket.py) and Go's
crypto/tls do. FastTransport and H2Transport sent `localhost.` and checked the
certificate against it: CERTIFICATE_VERIFY_FAILED, a 502 on every request."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from aiohttp import web

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Response, H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.h2server import ScriptedH2Server
from tests.unit.test_fasttransport import _self_signed, serve_app


class _Loopback:
    """A resolver that answers 127.0.0.1 for any name and notes the names asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[tuple[int, str]]:
        self.asked.append(host)
        return [(socket.AF_INET, "127.0.0.1")]


def _server_context(cert: Path, key: Path, names: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _, name, __: names.append(name)
    return context


async def test_fast_transport_names_a_fully_qualified_host_without_its_dot(
        tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    names: list[str | None] = []

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    url, runner = await serve_app({"/hello": hello}, _server_context(cert, key, names))
    port = url.rsplit(":", 1)[1]
    resolver = _Loopback()
    client = FastTransport(UpstreamSettings(connect_timeout=5),
                           ssl_context=ssl.create_default_context(cafile=str(cert)),
                           resolver=resolver)
    try:
        response = await client.send(
            UpstreamRequest("GET", f"https://localhost.:{port}/hello", {}))
        assert response.status == 200
        assert await response.read(100) == b"ok"
        response.close()
    finally:
        await client.close()
        await runner.cleanup()
    assert names == ["localhost"]
    assert resolver.asked == ["localhost."]  # DNS is asked the name as written


async def test_h2_transport_names_a_fully_qualified_host_without_its_dot(
        tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    names: list[str | None] = []
    context = _server_context(cert, key, names)
    context.set_alpn_protocols(["h2"])
    script = ScriptedH2Server()
    base = await script.start(context)
    port = base.rsplit(":", 1)[1]
    resolver = _Loopback()
    transport = H2Transport(UpstreamSettings(http2=True, connect_timeout=5),
                            ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)),
                            resolver=resolver)
    try:
        response = await transport.send(
            UpstreamRequest("GET", f"https://localhost.:{port}/ok", {}))
        assert isinstance(response, H2Response)
        assert await response.read(100) == b"hello"
    finally:
        await transport.close()
        await script.stop()
    assert names == ["localhost"]
    assert resolver.asked == ["localhost."]
