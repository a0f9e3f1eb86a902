"""The realtime WebSocket's proxy failures are told as aiohttp's client tells them
(upstream/proxied.py's words): the proxy named (scheme://host:port, never its user or
password) and what it said (a 407 with the credentials hint, a 403, a SOCKS refusal, a
close, not reachable). They were all 'Could not open a WebSocket to Azure OpenAI
(InvalidProxyStatus)' (or ProxyError, ConnectionRefusedError) with no proxy named, and
`http://TOKEN@proxy` was refused by websockets (InvalidProxy) instead of being sent as
Basic TOKEN: as the HTTP requests send it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.websocket import open_socket

PASSWORD = "s3cret-proxy-pw"
AZURE = "ws://azure.invalid/openai/realtime?deployment=rt"
_ANSWERS = {
    "407": b"HTTP/1.1 407 Proxy Authentication Required\r\n"
           b"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n",
    "403": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    "close": b"",
}
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _failure(serve: Serve, proxy: str, key: str = "http_proxy") -> UpstreamUnreachable:
    """open_socket's error through a proxy on loopback that does `serve`; `proxy` is its
    URL with PORT for the port."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(connect_timeout=5, **{key: proxy.replace("PORT", str(port))})
    try:
        with pytest.raises(UpstreamUnreachable) as caught:
            await open_socket(AZURE, {"api-key": "k"}, settings)
    finally:
        server.close()
    assert caught.value.request_sent is False
    message = caught.value.message
    assert f"127.0.0.1:{port}" in message and "azure.invalid" in message, message
    assert PASSWORD not in message and "alice" not in message, message
    return caught.value


def _http_proxy(mode: str, heads: list[bytes]) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_ANSWERS[mode])
        await writer.drain()
        writer.close()
    return serve


@pytest.mark.parametrize(("mode", "said"), [
    ("407", "did not open a tunnel to it: 407 Proxy Authentication Required (the user and "
            "password in the proxy URL are missing or wrong)"),
    ("403", "did not open a tunnel to it: 403 Forbidden."),
    ("close", "did not open a tunnel to it: "),
])
async def test_an_http_proxy_refusing_the_websocket_is_named_with_what_it_said(
        mode: str, said: str) -> None:
    heads: list[bytes] = []
    failure = await _failure(_http_proxy(mode, heads),
                             f"http://alice:{PASSWORD}@127.0.0.1:PORT")
    assert "the upstream proxy http://127.0.0.1:" in failure.message
    assert said in failure.message, failure.message
    assert heads and heads[0].startswith(b"CONNECT azure.invalid:80 ")


@pytest.mark.parametrize(("user", "sent"), [("TOKEN", b"TOKEN:"), ("TOKEN:", b"TOKEN:")])
async def test_a_proxy_user_without_a_password_is_sent_as_for_http(
        user: str, sent: bytes) -> None:
    heads: list[bytes] = []
    failure = await _failure(_http_proxy("407", heads), f"http://{user}@127.0.0.1:PORT")
    assert "407 Proxy Authentication Required" in failure.message
    [head] = heads
    assert b"Proxy-Authorization: Basic " + base64.b64encode(sent) + b"\r\n" in head


async def test_a_socks_refusal_is_named_with_its_reply() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = await reader.readexactly(2)
        await reader.readexactly(greeting[1])
        writer.write(b"\x05\x00")  # no authentication
        await reader.readexactly(4)
        name = await reader.readexactly((await reader.readexactly(1))[0])
        assert name == b"azure.invalid"  # the proxy resolves Azure's name
        await reader.readexactly(2)
        writer.write(b"\x05\x02\x00\x01" + bytes(6))  # not allowed by ruleset
        await writer.drain()
        writer.close()

    failure = await _failure(refuse, f"socks5://alice:{PASSWORD}@127.0.0.1:PORT",
                             "socks_proxy")
    assert "the upstream proxy socks5://127.0.0.1:" in failure.message
    assert "did not open a tunnel to it: Connection not allowed by ruleset" in failure.message


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_a_proxy_not_listening_is_named_as_unreachable(
        scheme: str, reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    settings = UpstreamSettings(connect_timeout=5, **{
        f"{'socks' if scheme == 'socks5' else 'http'}_proxy":
            f"{scheme}://alice:{PASSWORD}@127.0.0.1:{port}"})
    with pytest.raises(UpstreamUnreachable) as caught:
        await open_socket(AZURE, {}, settings)
    message = caught.value.message
    assert f"the upstream proxy {scheme}://127.0.0.1:{port} cannot be reached" in message
    assert PASSWORD not in message and "alice" not in message


async def test_a_proxy_opening_no_tunnel_in_time_is_named_in_the_504() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # says nothing until the client leaves

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(connect_timeout=0.3,
                                http_proxy=f"http://alice:{PASSWORD}@127.0.0.1:{port}")
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await open_socket(AZURE, {}, settings)
    finally:
        server.close()
    message = caught.value.message
    assert f"in time (through the upstream proxy http://127.0.0.1:{port})" in message, message
    assert PASSWORD not in message and "alice" not in message
    assert caught.value.status == 504
