"""The realtime WebSocket's tunnel through an HTTP proxy (upstream/tunnel.py). websockets'
own CONNECT client fed its reader EOF twice when the proxy closed during CONNECT: the
client got its 502, and the loop logged 'Exception in callback ... EOFError: stream
ended' with a traceback, a line an operator pages on, at every such failure. The answer
is read to its blank line however it is split; an IPv6 literal is bracketed; a 2xx with
bytes after its head (Azure's, which would be lost: on main the handshake then waited
out connect_timeout, a 504) or a garbled answer is a refusal, told at once."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import pytest
from websockets.asyncio.server import ServerConnection, serve

from azure_openai_proxy.errors import UpstreamTimeout, UpstreamUnreachable
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.websocket import open_socket
from tests.e2e.test_revh1_proxy_urls import _both_refused
from tests.e2e.test_revh1_ws_proxy import Serve

PASSWORD = "s3cret-proxy-pw"


async def _through(serve_proxy: Serve, azure: str = "ws://azure.invalid/openai/realtime"
                   ) -> str:
    """open_socket through a proxy on loopback doing `serve_proxy`: 'echoed' or the error."""
    server = await asyncio.start_server(serve_proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(connect_timeout=3,
                                http_proxy=f"http://alice:{PASSWORD}@127.0.0.1:{port}")
    try:
        upstream = await open_socket(azure, {"api-key": "k"}, settings)
    except UpstreamUnreachable as exc:
        assert PASSWORD not in exc.message and "alice" not in exc.message
        return exc.message.replace(str(port), "PORT")
    finally:
        server.close()
    await upstream.send("hello")
    echoed = await upstream.receive()
    await upstream.close()
    return f"echoed {echoed!r}"


def _answering(*parts: bytes, close: bool = True, heads: list[bytes] | None = None) -> Serve:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if heads is not None:
            heads.append(head)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        if close:
            writer.close()
        else:
            await reader.read()
    return answer


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                                    b"HTTP/1.1 200 Connection established\r\n"])
async def test_a_proxy_closing_during_connect_logs_no_traceback(
        answer: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failed = await _through(_answering(answer))
    assert "the upstream proxy http://127.0.0.1:PORT did not open a tunnel to it" in failed
    for _ in range(5):  # the transport's connection_lost runs a turn or two later
        await asyncio.sleep(0.01)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged == []  # on main: 'Exception in callback ...' for b"" and the 200


@pytest.mark.parametrize(("parts", "said"), [
    ((b"HTTP/1.1 200 OK\r\n\r\nAZURE",), "200 OK and bytes after it"),
    ((b"SSH-2.0-OpenSSH_9.6\r\n\r\n",), "not an HTTP answer"),
    ((b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20_000,), "an answer head past 16 KB"),
])
async def test_an_answer_the_tunnel_cannot_be_used_after_is_a_refusal(
        parts: tuple[bytes, ...], said: str) -> None:
    failed = await _through(_answering(*parts, close=False))
    assert f"did not open a tunnel to it: {said}." in failed, failed


async def test_an_answer_split_across_segments_opens_the_tunnel() -> None:
    heads: list[bytes] = []

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        for part in (b"HTTP/1.0 200 Conn", b"ection established\r\nProxy-Agent: t\r\n",
                     b"\r\n"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        azure_reader, azure_writer = await asyncio.open_connection("127.0.0.1", azure_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()
        await asyncio.gather(pipe(reader, azure_writer), pipe(azure_reader, writer))

    async with serve(echo, "127.0.0.1", 0) as azure:
        azure_port = azure.sockets[0].getsockname()[1]
        assert await _through(tunnel) == "echoed 'hello'"
    [head] = heads
    assert head.startswith(b"CONNECT azure.invalid:80 HTTP/1.1\r\nHost: azure.invalid:80\r\n")
    assert b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0LXByb3h5LXB3\r\n" in head


async def test_an_ipv6_literal_is_bracketed_in_connect() -> None:
    heads: list[bytes] = []
    refuse = _answering(b"HTTP/1.1 403 Forbidden\r\n\r\n", heads=heads)
    failed = await _through(refuse, "wss://[2001:db8::1]:8443/openai/realtime")
    assert "did not open a tunnel to it: 403 Forbidden." in failed
    assert heads[0].startswith(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n")


async def test_percent_encoded_latin1_credentials_go_as_their_bytes_from_both_clients(
) -> None:
    """`p%E4ss` for a proxy that checks Latin-1: the byte 0xE4, from aiohttp's client and
    the realtime sockets alike (a config error on main, 'not percent-encoded UTF-8'; and
    before that a 500 on every request). `pä` as written goes as UTF-8, as Go sends it."""
    heads: list[bytes] = []
    refuse = _answering(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", heads=heads)
    await _both_refused(refuse, "http_proxy", "http://j%FCrgen:p%E4ss@127.0.0.1:PORT", "407")
    sent = base64.b64encode(b"j\xfcrgen:p\xe4ss")
    assert len(heads) == 2
    for head in heads:
        assert b"\r\nProxy-Authorization: Basic " + sent + b"\r\n" in head, head


@pytest.mark.parametrize("cancel", [True, False])
async def test_a_tunnel_given_up_leaves_no_socket(cancel: bool) -> None:
    """The client leaving, or connect_timeout, while the proxy says nothing: the socket to
    it is closed (the proxy's side reads its end)."""
    ended = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()
        ended.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = UpstreamSettings(connect_timeout=0.3 if not cancel else 5,
                                http_proxy=f"http://127.0.0.1:{port}")
    before = len(os.listdir("/proc/self/fd"))
    opening = asyncio.ensure_future(open_socket("ws://azure.invalid/x", {}, settings))
    if cancel:
        await asyncio.sleep(0.2)
        opening.cancel()
    with pytest.raises(asyncio.CancelledError if cancel else UpstreamTimeout):
        await opening
    await asyncio.wait_for(ended.wait(), 2)
    for _ in range(5):  # closed transports let go of their sockets a turn later
        await asyncio.sleep(0.01)
    server.close()
    assert len(os.listdir("/proc/self/fd")) <= before
