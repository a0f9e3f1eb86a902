"""`H2Transport` against a scripted HTTP/2 server (`h2server.py`, on the `h2` package):
the protocol's corners nginx does not show on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Response, H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.h2server import BIG, ScriptedH2Server


@pytest.fixture
async def server() -> AsyncIterator[ScriptedH2Server]:
    script = ScriptedH2Server()
    await script.start()
    yield script
    await script.stop()


def _get(base: str, path: str, body: Any = None, method: str = "GET") -> UpstreamRequest:
    return UpstreamRequest(method, base + path, {"x-test": "1"}, body)


async def _transport(**settings: Any) -> H2Transport:
    return H2Transport(UpstreamSettings(http2=True, **settings))


async def test_an_answer_and_a_second_on_the_same_connection(server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport()
    for _ in range(2):
        response = await transport.send(_get(base, "/ok"))
        assert response.status == 200 and response.headers["content-type"] == "text/plain"
        assert await response.read(1000) == b"hello"
        response.close()
    assert [number for number, _ in server.requests] == [1, 1]
    assert transport.connections_in_use() == 0
    await transport.close()


async def test_a_request_body_larger_than_the_servers_window_is_sent_whole(
        server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport()
    body = b"x" * (200 * 1024)  # past h2's default 64 KiB windows: WINDOW_UPDATEs needed
    response = await transport.send(_get(base, "/echo", body, "POST"))
    assert await response.read(1000) == b"204800"

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 50_000
    response = await transport.send(_get(base, "/echo", lambda: pieces(), "POST"))
    assert await response.read(1000) == b"200000"
    assert server.bodies == [body, b"y" * 200_000]
    await transport.close()


async def test_a_slow_reader_holds_back_its_own_stream_only(server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport()
    big = await transport.send(_get(base, "/big"))  # not read: its window fills
    await asyncio.sleep(0.2)
    other = await asyncio.wait_for(transport.send(_get(base, "/ok")), 5)
    assert await other.read(100) == b"hello"  # same connection, not stalled behind /big
    assert [number for number, _ in server.requests] == [1, 1]
    body = await asyncio.wait_for(big.read(2 * BIG), 10)  # read: the windows reopen
    assert body == bytes(range(256)) * (BIG // 256)
    await transport.close()


async def test_a_small_body_in_the_headers_write_is_the_body_sent_in_pieces(
        server: ScriptedH2Server) -> None:
    transport = await _transport()
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'

    async def pieces() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]
    for sent in (body, lambda: pieces()):  # one write with the HEADERS; DATA frames after
        response = await transport.send(_get(server.url, "/ok", sent, "POST"))
        assert await response.read(100) == b"hello"
    assert server.bodies == [body, body]
    await transport.close()


async def test_a_ping_is_answered(server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport()
    response = await asyncio.wait_for(transport.send(_get(base, "/ping")), 5)
    assert await response.read(100) == b"pong"
    assert server.pings_acked == 1
    await transport.close()


@pytest.mark.parametrize("path", ["/goaway", "/refuse"])
async def test_a_request_the_server_did_not_process_is_sent_again(
        server: ScriptedH2Server, path: str) -> None:
    base = server.url
    transport = await _transport()
    first = await transport.send(_get(base, "/ok"))
    assert await first.read(100) == b"hello"
    response = await asyncio.wait_for(transport.send(_get(base, path, b"{}", "POST")), 5)
    assert await response.read(100) == b"hello"
    seen = [p for _, p in server.requests]
    assert seen == ["/ok", path, path]
    if path == "/goaway":  # the connection said goodbye: the retry went on a new one
        assert server.connections == 2 and server.requests[-1][0] == 2
    else:
        assert server.connections == 1
    await transport.close()


async def test_closing_before_the_end_resets_the_stream_and_keeps_the_connection(
        server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport()
    stalled = await transport.send(_get(base, "/stall"))
    stalled.close()
    await asyncio.sleep(0.1)
    assert [code for _, code in server.resets] == [8]  # CANCEL
    response = await transport.send(_get(base, "/ok"))
    assert await response.read(100) == b"hello"
    assert server.connections == 1
    await transport.close()


async def test_a_stalled_answer_times_out(server: ScriptedH2Server) -> None:
    base = server.url
    transport = await _transport(read_timeout=0.4)
    response = await transport.send(_get(base, "/stall"))
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(response.read(100), 5)
    response.close()
    assert [code for _, code in server.resets] == [8]
    await transport.close()


async def test_the_servers_stream_limit_opens_more_connections() -> None:
    script = ScriptedH2Server(max_streams=2)
    base = await script.start()
    transport = await _transport()
    stalls = [await transport.send(_get(base, "/stall")) for _ in range(5)]
    assert script.connections == 3
    for response in stalls:
        response.close()
    await transport.close()
    await script.stop()


class _Sink:
    """A `BodySink` that keeps what it is given."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.flushes = 0
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def feed(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        self.flushes += 1

    def end(self) -> None:
        self.outcome.set_result("end")

    def fail(self, error: Exception) -> None:
        self.outcome.set_result(type(error).__name__)


async def test_a_pushed_body_is_the_pulled_one(server: ScriptedH2Server) -> None:
    transport = await _transport()
    pulled = await transport.send(_get(server.url, "/big"))
    expected = await asyncio.wait_for(pulled.read(2 * BIG), 10)
    pushed = await transport.send(_get(server.url, "/big"))
    assert isinstance(pushed, H2Response)
    sink = _Sink()
    pushed.relay(sink)
    assert await asyncio.wait_for(sink.outcome, 10) == "end"
    assert b"".join(sink.parts) == expected and sink.flushes >= 1
    await transport.close()


async def test_a_paused_push_holds_back_its_stream_until_resumed(
        server: ScriptedH2Server) -> None:
    transport = await _transport()
    response = await transport.send(_get(server.url, "/big"))
    assert isinstance(response, H2Response)
    sink = _Sink()
    response.relay(sink)
    response.pause()  # the client is slow
    relayed = len(sink.parts)
    await asyncio.sleep(0.3)
    assert len(sink.parts) == relayed and not sink.outcome.done()
    assert server.pending_bytes() > 0  # the window is spent: the server waits
    other = await transport.send(_get(server.url, "/ok"))  # the connection is not stalled
    assert await other.read(100) == b"hello"
    response.resume()
    assert await asyncio.wait_for(sink.outcome, 10) == "end"
    assert b"".join(sink.parts) == bytes(range(256)) * (BIG // 256)
    await transport.close()


async def test_a_pushed_stream_that_stalls_fails_its_sink(server: ScriptedH2Server) -> None:
    transport = await _transport(read_timeout=0.4)
    response = await transport.send(_get(server.url, "/stall"))
    assert isinstance(response, H2Response)
    sink = _Sink()
    response.relay(sink)
    assert await asyncio.wait_for(sink.outcome, 5) == "UpstreamTimeout"
    await transport.close()


async def test_tls_negotiates_h2_by_alpn(tmp_path: Any) -> None:
    import ssl

    from tests.unit.test_fasttransport import _self_signed

    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.set_alpn_protocols(["h2"])
    script = ScriptedH2Server()
    base = await script.start(server_context)
    transport = H2Transport(UpstreamSettings(http2=True),
                            ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)))
    for _ in range(2):
        response = await transport.send(_get(base, "/ok"))
        assert isinstance(response, H2Response) and await response.read(100) == b"hello"
    assert script.connections == 1 and transport._http1 is None
    await transport.close()
    await script.stop()


async def test_tls_without_h2_falls_back_to_http1(tmp_path: Any) -> None:
    import ssl

    from aiohttp import web

    from azure_openai_proxy.upstream.fast import FastResponse
    from tests.unit.test_fasttransport import _self_signed, serve_app

    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)  # no ALPN: HTTP/1.1 only

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"HTTP/{request.version.major}.{request.version.minor}")

    url, runner = await serve_app({"/hello": hello}, server_context)
    transport = H2Transport(UpstreamSettings(http2=True),
                            ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)))
    for _ in range(2):  # the second goes straight to HTTP/1.1
        response = await transport.send(UpstreamRequest("GET", url + "/hello", {}))
        assert isinstance(response, FastResponse)
        assert await response.read(100) == b"HTTP/1.1"
        response.close()
    (pool,) = transport._pools.values()
    assert pool.http1 and pool.conns == []
    await transport.close()
    await runner.cleanup()


async def test_a_connection_lost_mid_answer_breaks_its_streams_and_the_next_gets_a_new_one(
        server: ScriptedH2Server) -> None:
    from azure_openai_proxy.upstream.transport import UpstreamStreamBroken

    transport = await _transport()
    stalled = await transport.send(_get(server.url, "/stall"))  # on the same connection
    dying = await transport.send(_get(server.url, "/die"))
    with pytest.raises(UpstreamStreamBroken):
        await asyncio.wait_for(dying.read(100), 5)
    with pytest.raises(UpstreamStreamBroken):
        await asyncio.wait_for(stalled.read(100), 5)
    response = await transport.send(_get(server.url, "/ok"))
    assert await response.read(100) == b"hello"
    assert server.connections == 2
    await transport.close()


async def test_a_stream_ended_without_a_head_fails_at_once(server: ScriptedH2Server) -> None:
    from azure_openai_proxy.errors import UpstreamUnreachable

    transport = await _transport()
    with pytest.raises(UpstreamUnreachable, match="without an answer"):
        await asyncio.wait_for(transport.send(_get(server.url, "/headless")), 5)
    await transport.close()


async def test_an_http1_only_server_over_http_is_unreachable_not_a_hang() -> None:
    from aiohttp import web

    from azure_openai_proxy.errors import UpstreamUnreachable
    from tests.unit.test_fasttransport import serve_app

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    url, runner = await serve_app({"/hello": hello})
    transport = await _transport(connect_timeout=5)
    with pytest.raises(UpstreamUnreachable, match="h2c"):
        await asyncio.wait_for(transport.send(UpstreamRequest("GET", url + "/hello", {})), 10)
    await transport.close()
    await runner.cleanup()
