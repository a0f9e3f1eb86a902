"""Regressions from a review of the request path: each of these failed before its fix.

The upstream here is a raw asyncio server whose answers the tests shape byte by byte
(a body cut in the middle, a stream that never ends), and the gateway runs on the
default server engine in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from azure_openai_proxy.gateway import relay as relay_module
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from azure_openai_proxy.settings import DeploymentSettings, Settings, UpstreamSettings
from tests.waiting import until_async

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]
CHAT = {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}]}


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def json_reply(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)) + body


def raw_post(body: Any, stream: bool = False) -> bytes:
    data = json.dumps({"model": "gpt-4o", "messages": [], "stream": stream, **body}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(data)) + data


async def upstream(answer: Answer) -> tuple[asyncio.Server, int]:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                await answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


LIMITS = ServerLimits(head_timeout=2, body_timeout=2, keepalive_timeout=2, send_timeout=2)


async def gateway(port: int, limits: ServerLimits = LIMITS,
                  **upstream_settings: Any) -> tuple[Any, FastServer, int]:
    settings = Settings(
        deployments=(DeploymentSettings(model_name="gpt-4o", deployment_name="gpt-4o",
                                        endpoint=f"http://127.0.0.1:{port}", api_key="k" * 32),),
        upstream=UpstreamSettings(**upstream_settings), allow_open=True, log_level="warning",
    )
    app = create_app(settings)
    server = await serve_fast(app, "127.0.0.1", 0, limits=limits)
    return app, server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    closers: list[Any] = []
    yield closers
    for closer in reversed(closers):
        result = closer()
        if asyncio.iscoroutine(result):
            await result


async def test_a_client_leaving_during_a_json_answer_releases_the_upstream_connection(
    cleanup: list[Any],
) -> None:
    body_started = asyncio.Event()

    async def slow_body(writer: asyncio.StreamWriter) -> None:
        data = json_reply(CHAT)
        cut = data.index(b"\r\n\r\n") + 10
        writer.write(data[:cut])
        await writer.drain()
        body_started.set()
        await asyncio.sleep(0.5)
        writer.write(data[cut:])
        await writer.drain()

    up, up_port = await upstream(slow_body)
    cleanup.append(up.close)
    app, server, port = await gateway(up_port, pool_size=1)
    cleanup.append(lambda: server.shutdown(1))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_post({}))
    await writer.drain()
    await asyncio.wait_for(body_started.wait(), 5)

    def head_received() -> bool:  # the gateway has Azure's head and waits for the body
        pools = app.gateway.transport.http1._pools.values()  # http:// under http2: auto
        return any(c.received and not c.complete for pool in pools for c in pool.every)

    await until_async(head_received)
    writer.close()  # the client leaves while the answer's body is arriving
    await until_async(lambda: app.gateway.transport.connections_in_use() == 0)
    assert app.gateway.transport.connections_in_use() == 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_post({}))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(64), 5)  # with the slot leaked: a hang
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_bug_mid_stream_ends_the_stream_cleanly(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = (b'data: {"id":"a","object":"chat.completion.chunk","created":1,"model":"m",'
             b'"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')

    async def stream(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for _ in range(3):
            writer.write(chunk(frame))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")

    original = relay_module.ChatStreamNormalizer.feed
    calls = {"n": 0}

    def failing_feed(self: Any, chunk: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bug of ours")
        return original(self, chunk)

    monkeypatch.setattr(relay_module.ChatStreamNormalizer, "feed", failing_feed)
    up, up_port = await upstream(stream)
    cleanup.append(up.close)
    _app, server, port = await gateway(up_port)
    cleanup.append(lambda: server.shutdown(1))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_post({}, stream=True))
    await writer.drain()
    received = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert received.count(b"HTTP/1.1") == 1  # no second response inside the stream
    assert b'"code":"stream_interrupted"' in received
    assert b"data: [DONE]" in received
    writer.close()


async def test_keep_alive_survives_a_request_longer_than_the_idle_timeout(cleanup: list[Any]) -> None:
    # Every client-side timeout shortened to 0.5 s (the sweep: every 0.125 s; deadlines
    # count sweeps, so a loaded machine makes them late, never early): each answer takes
    # twice as long as any of them, as the 3 s answers did against 2 s timeouts (a head's
    # or body's deadline outliving its request fails this too), in 2.2 s instead of 7.2.
    async def slow(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)
        writer.write(json_reply(CHAT))
        await writer.drain()

    up, up_port = await upstream(slow)
    cleanup.append(up.close)
    limits = ServerLimits(head_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5, send_timeout=2)
    _app, server, port = await gateway(up_port, limits)
    cleanup.append(lambda: server.shutdown(1))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_post({}))
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert first.startswith(b"HTTP/1.1 200")
    length = int(first.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    await asyncio.sleep(0.2)  # idle for less than the timeout
    writer.write(raw_post({}))
    await writer.drain()
    second = await asyncio.wait_for(reader.read(64), 10)
    assert second.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_client_that_stops_reading_is_disconnected(cleanup: list[Any]) -> None:
    frame = (b'data: {"id":"a","object":"chat.completion.chunk","created":1,"model":"m",'
             b'"choices":[{"index":0,"delta":{"content":"' + b"x" * 4000 + b'"}}]}\n\n')

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for _ in range(20000):
            writer.write(chunk(frame))
            await writer.drain()

    up, up_port = await upstream(endless)
    cleanup.append(up.close)
    app, server, port = await gateway(up_port)
    cleanup.append(lambda: server.shutdown(1))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
    client.send(raw_post({}, stream=True))  # and never reads the answer
    cleanup.append(client.close)
    # The send timeout is 2 s; the sweep runs every half second.
    await until_async(lambda: app.gateway.transport.connections_in_use() == 0 and not any(
        c.task is not None for c in server.connections
    ))
    assert app.gateway.transport.connections_in_use() == 0
    assert not any(c.task is not None for c in server.connections)
