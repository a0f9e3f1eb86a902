"""FastTransport against real servers on loopback: aiohttp apps in this test's loop, and
raw asyncio servers where a test needs bytes no HTTP framework would write."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.errors import (
    HostileInput,
    UpstreamAnswerTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import HIGH_WATER, FastTransport
from azure_openai_proxy.upstream.fast.connection import _Connection
from azure_openai_proxy.upstream.fast.pool import _HostPool
from azure_openai_proxy.upstream.transport import (
    DRAIN_BYTES,
    AiohttpTransport,
    UpstreamRequest,
    UpstreamStreamBroken,
)
from tests.support import bound_socket, reserved_socket
from tests.waiting import until_async

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peers:
    """The client ports an aiohttp server saw: one per connection."""

    def __init__(self) -> None:
        self.ports: set[int] = set()

    def saw(self, request: web.Request) -> None:
        assert request.transport is not None
        self.ports.add(request.transport.get_extra_info("peername")[1])


async def serve_app(routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None) -> tuple[str, web.AppRunner]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bound_socket()
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    scheme = "https" if ssl_context else "http"
    return f"{scheme}://127.0.0.1:{port}", runner


async def serve_raw(handler: RawHandler) -> tuple[str, asyncio.Server, list[int]]:
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, connections


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def transport(**options: Any) -> FastTransport:
    ssl_context = options.pop("ssl_context", None)
    return FastTransport(UpstreamSettings(**options), ssl_context=ssl_context)


def post(url: str, body: Any = b"{}", **headers: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json", **headers}, body)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Peers]]:
    peers = Peers()

    async def echo(request: web.Request) -> web.Response:
        peers.saw(request)
        body = await request.read()
        return web.json_response({"method": request.method, "body": body.decode(),
                                  "headers": dict(request.headers)},
                                 headers={"X-Request-Id": "r-1"})

    async def slow(request: web.Request) -> web.Response:
        peers.saw(request)
        await asyncio.sleep(0.01)
        return web.Response(text="ok")

    async def late(request: web.Request) -> web.StreamResponse:
        peers.saw(request)
        response = web.StreamResponse()
        response.content_length = 4
        await response.prepare(request)
        await asyncio.sleep(0.02)
        await response.write(b"late")
        return response

    url, runner = await serve_app({"/echo": echo, "/slow": slow, "/late": late})
    yield url, peers
    await runner.cleanup()


async def test_content_length_answer_and_request_head(upstream: tuple[str, Peers]) -> None:
    url, _ = upstream
    client = transport()
    response = await client.send(post(url + "/echo?api-version=1", b'{"a":1}', **{"api-key": "k"}))
    assert response.status == 200
    assert response.headers["x-request-id"] == response.headers["X-REQUEST-ID"] == "r-1"
    answer = await response.read(1 << 20)
    response.close()
    import json

    seen = json.loads(answer)
    assert seen["body"] == '{"a":1}'
    assert seen["headers"]["Content-Length"] == "7"
    assert seen["headers"]["Host"] == url.removeprefix("http://")
    assert seen["headers"]["api-key"] == "k"
    assert "Accept-Encoding" not in seen["headers"]
    await client.close()


async def test_read_past_the_limit_raises_never_truncates(upstream: tuple[str, Peers]) -> None:
    url, _ = upstream
    client = transport()
    response = await client.send(post(url + "/echo"))
    with pytest.raises(UpstreamAnswerTooLarge):
        await response.read(5)
    response.close()
    assert client.connections_in_use() == 0
    await client.close()


async def test_keep_alive_reuses_one_connection(upstream: tuple[str, Peers]) -> None:
    url, peers = upstream
    client = transport()
    for _ in range(20):
        response = await client.send(post(url + "/echo"))
        await response.read(1 << 20)
        response.close()
    assert len(peers.ports) == 1
    await client.close()


async def test_unread_body_closes_the_connection(upstream: tuple[str, Peers]) -> None:
    url, peers = upstream
    client = transport()
    for _ in range(2):
        response = await client.send(UpstreamRequest("GET", url + "/late", {}))
        response.close()  # before the body came: the connection cannot be reused
        await until_async(lambda: client.connections_in_use() == 0)
    assert len(peers.ports) == 2
    await client.close()


async def test_pool_size_bounds_connections_under_100_concurrent_requests(
    upstream: tuple[str, Peers],
) -> None:
    url, peers = upstream
    client = transport(pool_size=4)

    async def one() -> bytes:
        response = await client.send(UpstreamRequest("GET", url + "/slow", {}))
        try:
            return await response.read(100)
        finally:
            response.close()

    answers = await asyncio.gather(*(one() for _ in range(100)))
    assert answers == [b"ok"] * 100
    assert len(peers.ports) == 4  # 100 waiting requests: every slot opened, no more
    await client.close()


async def test_chunked_with_boundaries_split_across_reads() -> None:
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chu", b"nked\r\nContent-Type: text/plain\r\n\r\n",
              b"5\r\nhel", b"lo\r", b"\n7\r\n worl", b"d!\r\n0", b"\r\n\r\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        await read_head(reader)  # a second request on the same connection

    url, server, _connections = await serve_raw(handler)
    client = transport()
    response = await client.send(UpstreamRequest("GET", url + "/", {}))
    received = [chunk async for chunk in response.chunks()]
    response.close()
    assert b"".join(received) == b"hello world!"
    assert len(received) >= 2  # delivered as it came, not at the end
    assert len(client._pools[("http", "127.0.0.1", server.sockets[0].getsockname()[1])].idle) == 1
    await client.close()
    server.close()


async def test_close_delimited_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"end")

    url, server, connections = await serve_raw(handler)
    client = transport()
    for _ in range(2):
        response = await client.send(UpstreamRequest("GET", url + "/", {}))
        assert await response.read(1000) == b"until the end"
        response.close()
    assert len(connections) == 2  # never reused: the end of the body was the end of it
    await client.close()
    server.close()


async def test_interim_answers_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_head(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                         b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone")
            await writer.drain()

    url, server, connections = await serve_raw(handler)
    client = transport()
    for _ in range(2):
        response = await client.send(post(url + "/"))
        assert response.status == 201
        assert response.headers["x-final"] == "yes" and "link" not in response.headers
        assert await response.read(10) == b"done"
        response.close()
    assert len(connections) == 1
    await client.close()
    server.close()


def _answer_once_per_connection() -> RawHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)
        # The second request on a connection: close without a word, like a server whose
        # idle timer fired just as the request was sent.

    return handler


async def test_stale_pooled_connection_is_retried_once_on_a_new_one() -> None:
    url, server, connections = await serve_raw(_answer_once_per_connection())
    client = transport()
    for _ in range(3):
        response = await client.send(post(url + "/")._replace(method="PUT"))
        assert await response.read(10) == b"ok"
        response.close()
    assert len(connections) == 3
    await client.close()
    server.close()


async def test_a_stale_post_is_not_sent_twice() -> None:
    """A POST (a chat call) may have been processed before the connection died."""
    url, server, connections = await serve_raw(_answer_once_per_connection())
    client = transport()
    response = await client.send(post(url + "/"))
    assert await response.read(10) == b"ok"
    response.close()
    with pytest.raises(UpstreamUnreachable):
        await client.send(post(url + "/"))
    assert len(connections) == 1
    await client.close()
    server.close()


async def test_an_idle_connection_the_server_closed_unseen_is_not_used_for_a_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's FIN is in our socket but the loop has not run since: the socket is
    looked at before reuse, so a POST (never retried) goes out on a new connection."""
    import socket
    import threading

    from azure_openai_proxy.upstream.fast import pool

    monkeypatch.setattr(pool, "_CHECK_IDLE_AFTER", 0.0)
    listener = socket.create_server(("127.0.0.1", 0))
    close_first = threading.Event()
    first_closed = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while len(accepted) < 2:
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if len(accepted) == 1:
                close_first.wait(5)
                conn.close()
                first_closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = transport()
    try:
        for index in range(2):
            if index:
                close_first.set()
                # Blocks the loop until the server has closed: it cannot see the FIN arrive.
                assert first_closed.wait(5)
            response = await client.send(post(url + "/"))
            assert await response.read(10) == b"ok"
            response.close()
        assert len(accepted) == 2
    finally:
        await client.close()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


async def test_stale_retry_replays_a_streamed_body() -> None:
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        bodies.append(await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r")[0])))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)

    url, server, _connections = await serve_raw(handler)
    client = transport()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    for _ in range(2):
        request = post(url + "/", pieces, **{"content-length": "4"})
        response = await client.send(request._replace(method="PUT"))
        assert await response.read(10) == b"ok"
        response.close()
    assert bodies == [b"abcd", b"abcd"]
    await client.close()
    server.close()


async def test_a_new_connection_closed_before_answering_is_unreachable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    url, server, connections = await serve_raw(handler)
    client = transport()
    with pytest.raises(UpstreamUnreachable, match="closed the connection before answering") as caught:
        await client.send(post(url + "/"))
    assert not isinstance(caught.value, UpstreamStreamBroken)
    assert len(connections) == 1  # a new connection is not retried
    await client.close()
    server.close()


@pytest.mark.parametrize("use_chunks", [False, True])
async def test_server_closing_mid_body_is_a_broken_stream(use_chunks: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        await asyncio.sleep(0.02)

    url, server, _ = await serve_raw(handler)
    client = transport()
    response = await client.send(post(url + "/"))
    with pytest.raises(UpstreamStreamBroken):
        if use_chunks:
            async for _ in response.chunks():
                pass
        else:
            await response.read(1000)
    response.close()
    await client.close()
    server.close()


async def test_connect_refused_is_unreachable() -> None:
    client = transport()
    with reserved_socket() as dead, pytest.raises(UpstreamUnreachable, match="connection refused"):
        await client.send(post(f"http://127.0.0.1:{dead.getsockname()[1]}/"))
    await client.close()


async def test_dns_failure_is_unreachable() -> None:
    client = transport()
    with pytest.raises(UpstreamUnreachable, match="DNS"):
        await client.send(post("http://no-such-host.invalid/"))
    await client.close()


async def test_no_answer_is_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    url, server, _ = await serve_raw(handler)
    client = transport(read_timeout=0.2)
    with pytest.raises(UpstreamTimeout, match="did not answer in time"):
        await client.send(post(url + "/"))
    await client.close()
    server.close()


async def body_until_timeout(handler: Any, read_timeout: float) -> list[bytes]:
    """The chunks an answer from `handler` gives before its silence times out."""
    url, server, _ = await serve_raw(handler)
    client = transport(read_timeout=read_timeout)
    response = await client.send(post(url + "/"))
    received = []
    with pytest.raises(UpstreamTimeout, match="stopped sending"):
        async for chunk in response.chunks():
            received.append(chunk)
    response.close()
    await client.close()
    server.close()
    return received


async def test_silence_in_the_middle_of_a_body_is_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    assert await body_until_timeout(handler, read_timeout=0.2) == [b"abc"]


async def test_a_slow_steady_body_outlives_the_read_timeout_then_silence_ends_it() -> None:
    """The read timeout is silence, not the whole answer: chunks every 50 ms for longer
    than the timeout keep it alive (the deadline moves), then silence ends it."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(24):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(5)

    assert b"".join(await body_until_timeout(handler, read_timeout=0.5)) == b"x" * 24


async def test_sse_events_arrive_before_the_server_finishes() -> None:
    first_seen = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"n":1}\n\n')
        await asyncio.wait_for(first_seen.wait(), 5)  # only after the client has it
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    url, runner = await serve_app({"/stream": stream})
    client = transport()
    response = await client.send(post(url + "/stream"))
    assert response.headers["content-type"] == "text/event-stream"
    received = []
    async for chunk in response.chunks():
        received.append(chunk)
        first_seen.set()
    response.close()
    assert received[0] == b'data: {"n":1}\n\n'
    assert b"".join(received).endswith(b"data: [DONE]\n\n")
    await client.close()
    await runner.cleanup()


async def test_a_big_body_read_slowly_stays_bounded_in_memory() -> None:
    total = 50 * 1024 * 1024
    piece = b"x" * (256 * 1024)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = total
        await response.prepare(request)
        for _ in range(total // len(piece)):
            await response.write(piece)
        return response

    url, runner = await serve_app({"/big": big})
    client = transport()
    response = await client.send(UpstreamRequest("GET", url + "/big", {}))
    conn = response._conn  # type: ignore[attr-defined]
    # One socket read may land after the pause: llhttp parses whatever it is given.
    bound = HIGH_WATER + 512 * 1024
    received = most = 0
    paused = False
    async for chunk in response.chunks():
        received += len(chunk)
        most = max(most, len(chunk))
        if received < 5 * 1024 * 1024:
            await asyncio.sleep(0.005)  # a slow client: the socket is paused meanwhile
            most = max(most, conn.buffered)
            paused = paused or conn.reading_paused
    response.close()
    assert received == total
    assert most <= bound
    assert paused
    await client.close()
    await runner.cleanup()


async def test_request_bodies_as_bytes_and_streams() -> None:
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Content-Length"), request.headers.get("Transfer-Encoding"),
                     await request.read()))
        return web.Response(text="ok")

    async def pieces() -> AsyncIterator[bytes]:
        for part in (b"multi", b"", b"part ", b"body" * 1000):
            yield part

    url, runner = await serve_app({"/r": record})
    client = transport()
    expected = b"multipart " + b"body" * 1000
    for body, headers in ((expected, {}), (pieces, {}), (pieces, {"content-length": str(len(expected))}),
                          (None, {})):
        response = await client.send(UpstreamRequest("POST", url + "/r", headers, body))
        assert await response.read(10) == b"ok"
        response.close()
    assert seen == [(str(len(expected)), None, expected), (None, "chunked", expected),
                    (str(len(expected)), None, expected), ("0", None, b"")]
    await client.close()
    await runner.cleanup()


async def test_gzip_answers_reach_callers_as_identity_bytes() -> None:
    text = b'{"choices": []}' * 1000

    async def zipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(text),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def zipped_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
        await response.prepare(request)
        packed = gzip.compress(text)
        for start in range(0, len(packed), 7):
            await response.write(packed[start:start + 7])
        await response.write_eof()
        return response

    url, runner = await serve_app({"/z": zipped, "/zs": zipped_stream})
    client = transport()
    response = await client.send(UpstreamRequest("GET", url + "/z", {}))
    assert "content-encoding" not in response.headers
    assert "content-length" not in response.headers
    assert await response.read(1 << 20) == text
    response.close()
    response = await client.send(UpstreamRequest("GET", url + "/zs", {}))
    assert b"".join([chunk async for chunk in response.chunks()]) == text
    response.close()
    await client.close()
    await runner.cleanup()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_with_a_trusted_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    peers = Peers()

    async def hello(request: web.Request) -> web.Response:
        peers.saw(request)
        return web.json_response({"tls": request.secure})

    url, runner = await serve_app({"/hello": hello}, server_context)
    trusting = ssl.create_default_context(cafile=str(cert))
    client = transport(ssl_context=trusting)
    for _ in range(3):
        response = await client.send(UpstreamRequest("GET", url + "/hello", {}))
        assert await response.read(100) == b'{"tls": true}'
        response.close()
    assert len(peers.ports) == 1
    await client.close()
    # Without the test's trust anchor the certificate is refused: verification is on.
    strict = transport()
    with pytest.raises(UpstreamUnreachable, match="TLS failed"):
        await strict.send(UpstreamRequest("GET", url + "/hello", {}))
    await strict.close()
    await runner.cleanup()


async def test_idle_connections_close_after_keepalive_timeout(upstream: tuple[str, Peers]) -> None:
    url, peers = upstream
    client = transport(keepalive_timeout=0.1)
    response = await client.send(post(url + "/echo"))
    await response.read(1 << 20)
    response.close()
    (pool,) = client._pools.values()
    (conn,) = pool.idle
    await until_async(lambda: conn.closed)  # the keep-alive timeout passed
    assert conn.closed and not pool.idle and pool.size == 0
    response = await client.send(post(url + "/echo"))  # a new one, transparently
    await response.read(1 << 20)
    response.close()
    assert len(peers.ports) == 2
    await client.close()


async def test_close_closes_pooled_connections(upstream: tuple[str, Peers]) -> None:
    url, _ = upstream
    client = transport()
    response = await client.send(post(url + "/echo"))
    await response.read(1 << 20)
    response.close()
    (pool,) = client._pools.values()
    (conn,) = pool.idle
    await client.close()
    assert conn.closed


async def test_line_breaks_in_headers_are_refused(upstream: tuple[str, Peers]) -> None:
    url, _ = upstream
    client = transport()
    with pytest.raises(HostileInput):
        await client.send(post(url + "/echo", **{"x-evil": "a\r\nHost: elsewhere"}))
    await client.close()


def test_socks_proxies_are_not_for_this_transport() -> None:
    with pytest.raises(ValueError, match="SOCKS proxies"):
        FastTransport(UpstreamSettings(socks_proxy="socks5://proxy:1080"))


def test_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(40):
                await response.write(b"y" * 65536)
            return response

        url, runner = await serve_app({"/s": stream})
        client = transport()
        for _ in range(2):
            response = await client.send(UpstreamRequest("GET", url + "/s", {}))
            size = 0
            async for chunk in response.chunks():
                size += len(chunk)
                await asyncio.sleep(0.001)
            response.close()
            assert size == 40 * 65536
        await client.close()
        await runner.cleanup()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


# -- the parser side, without sockets ---------------------------------------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass


def _chunked(parts: list[bytes]) -> bytes:
    framed = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in parts if part)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=30))
def test_chunked_decoding_survives_any_split(parts: list[bytes], cuts: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(_HostPool(loop, "test", 0))
        conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
        conn.start(head_only=False)
        wire = _chunked(parts)
        edges = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
        received = b""
        for start, end in itertools.pairwise(edges):
            conn.data_received(wire[start:end])
            received += conn.take()
        assert conn.error is None
        assert conn.complete and conn.keep_alive and conn.status == 200
        assert received == b"".join(parts)
    finally:
        loop.close()


@pytest.mark.parametrize("tail", [b"", b"x" * (DRAIN_BYTES + 1)], ids=["end", "oversize-tail"])
@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_finish_in_background_keeps_the_connection_only_for_a_short_tail(
    kind: str, tail: bytes
) -> None:
    """After the caller has what it wanted (a stream's [DONE]), the rest of the answer is
    read in the background: a connection whose answer then ends is pooled; one with
    more than DRAIN_BYTES still to come is closed rather than read on."""
    release, stop = asyncio.Event(), asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        peers.saw(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: [DONE]\n\n")
        await asyncio.wait_for(release.wait(), 5)  # only after the caller let go
        release.clear()
        if tail:
            await response.write(tail)
            # More than the bound, and no end in sight: the client must give up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
        await response.write_eof()
        return response

    peers = Peers()
    url, runner = await serve_app({"/stream": stream})
    client: Any = transport() if kind == "fast" else AiohttpTransport(UpstreamSettings())
    for _ in range(2):
        response = await client.send(post(url + "/stream"))
        chunks = response.chunks()
        assert await chunks.__anext__() == b"data: [DONE]\n\n"
        await chunks.aclose()
        response.finish_in_background()
        response.close()  # as the pipeline does afterwards: must not undo the hand-off
        release.set()
        await until_async(lambda: client.connections_in_use() == 0)
        assert client.connections_in_use() == 0
    assert len(peers.ports) == (1 if not tail else 2)
    stop.set()
    await client.close()
    await runner.cleanup()


def test_request_heads_frame_each_body_whatever_was_remembered() -> None:
    """The head's prefix is remembered per method, URL and headers; each body still gets
    its own framing, and a remembered prefix never hides a line break in a new header."""
    from azure_openai_proxy.upstream.fast.wire import _head, _parse_url

    target = _parse_url("http://azure.example:8001/openai/x?api-version=1")
    headers = {"api-key": "k", "content-type": "application/json"}

    async def stream() -> Any:
        yield b"x"

    for _ in range(2):  # the second time from the cache
        head, chunked = _head(UpstreamRequest("POST", "u", headers, b"12345"), target)
        assert head == (b"POST /openai/x?api-version=1 HTTP/1.1\r\nHost: azure.example:8001\r\n"
                        b"api-key: k\r\ncontent-type: application/json\r\n"
                        b"Content-Length: 5\r\n\r\n") and not chunked
        assert _head(UpstreamRequest("POST", "u", headers, b"123"), target)[0].endswith(
            b"Content-Length: 3\r\n\r\n")
        assert _head(UpstreamRequest("POST", "u", headers, None), target)[0].endswith(
            b"Content-Length: 0\r\n\r\n")
        assert _head(UpstreamRequest("GET", "u", headers, None), target)[0].endswith(
            b"content-type: application/json\r\n\r\n")
        assert _head(UpstreamRequest("POST", "u", headers, stream), target) == (
            head.replace(b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"), True)
        declared = {**headers, "content-length": "9"}
        assert _head(UpstreamRequest("POST", "u", declared, stream), target)[0].endswith(
            b"Content-Length: 9\r\n\r\n")
    with pytest.raises(HostileInput):
        _head(UpstreamRequest("POST", "u", {**headers, "x-a": "1\r\nx-b: 2"}, b""), target)
