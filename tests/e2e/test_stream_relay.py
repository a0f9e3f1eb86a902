"""Streams are relayed as they arrive, and a client that leaves closes the upstream.

The upstream here is a small real server whose stream is paced by the test itself, so
"the first event arrived before the upstream finished" is proved by ordering, not time:
the upstream only finishes after the client has seen the first event.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.support import ServerThread, serve
from tests.waiting import until_async

FRAME = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
         b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n')
FINISH = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
          b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')


class PacedUpstream:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()
        self.finished = threading.Event()

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                await response.write(FRAME)
                for _ in range(600):  # up to 30 s, then give up
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.05)
                    await response.write(b": keep-alive\n\n")
                await response.write(FINISH)
                await response.write_eof()
                self.finished.set()
            except (ConnectionResetError, asyncio.CancelledError):
                self.closed.set()
                raise
            finally:
                if not self.finished.is_set():
                    self.closed.set()
            return response

        app = web.Application()
        app.router.add_post("/openai/deployments/{dep}/chat/completions", chat)
        return app


BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("transport", ["fast", "aiohttp"])
async def test_first_event_reaches_client_before_upstream_finishes(
    transport: str, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    upstream = PacedUpstream()
    with serve(upstream.app) as server:
        gateway = start_gateway(gateway_settings(server.url, upstream={"transport": transport}))
        async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/chat/completions", json=BODY,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response:
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 20)
            assert b'"content":"hi"' in first
            assert not upstream.finished.is_set()  # the upstream is still held open
            upstream.release.set()
            rest = await response.content.read()
        assert rest.endswith(b"data: [DONE]\n\n")
        assert upstream.finished.wait(5)


@pytest.mark.parametrize("transport", ["fast", "aiohttp"])
async def test_client_disconnect_closes_the_upstream_request(
    transport: str, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    upstream = PacedUpstream()
    with serve(upstream.app) as server:
        gateway = start_gateway(gateway_settings(server.url, upstream={"transport": transport}))
        async with aiohttp.ClientSession() as session:
            response = await session.post(gateway.url + "/v1/chat/completions", json=BODY,
                                          headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            await asyncio.wait_for(response.content.readuntil(b"\n\n"), 20)
            response.close()  # the client goes away mid-stream
        assert upstream.closed.wait(10), "the upstream request was left open"
        assert not upstream.finished.is_set()

        assert await upstream_connections_settle(gateway) == 0, "an upstream connection leaked"


async def upstream_connections_settle(gateway: ServerThread) -> int:
    """The gateway's upstream connections in use, once that number reaches 0 (or 5 s)."""

    async def in_use() -> int:
        return gateway.app.gateway.transport.connections_in_use()  # type: ignore[no-any-return]

    with contextlib.suppress(AssertionError):  # the caller asserts on the number
        await until_async(lambda: gateway.call(in_use) == 0, timeout=5)
    return int(gateway.call(in_use))


class SlowEndingUpstream:
    """Sends a whole stream, `[DONE]` included, then holds the end of the body (the
    chunked terminator) until the test releases it. Records each request's connection."""

    def __init__(self) -> None:
        self.end = threading.Event()
        self.peers: list[Any] = []

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(FRAME + FINISH)
            for _ in range(200):  # up to 10 s
                if self.end.is_set():
                    break
                await asyncio.sleep(0.05)
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/openai/deployments/{dep}/chat/completions", chat)
        return app


@pytest.mark.parametrize("transport", ["fast", "aiohttp"])
async def test_stream_ends_at_done_and_the_upstream_connection_is_kept(
    transport: str, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    """The client's stream ends as soon as Azure's [DONE] is relayed, not when Azure's
    body ends; the client may hang up at once, and the upstream connection is still
    kept for the next request (no new TCP/TLS handshake to Azure)."""
    upstream = SlowEndingUpstream()
    with serve(upstream.app) as server:
        gateway = start_gateway(gateway_settings(server.url, upstream={"transport": transport}))
        async with aiohttp.ClientSession() as session:
            async with session.post(gateway.url + "/v1/chat/completions", json=BODY,
                                    headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
                body = await asyncio.wait_for(response.content.read(), 20)
            # The whole client body arrived while the upstream still holds its end.
            assert body.endswith(b"data: [DONE]\n\n")
            assert not upstream.end.is_set()
        upstream.end.set()  # the client is gone; the upstream now ends its body
        await asyncio.sleep(0)

        assert await upstream_connections_settle(gateway) == 0
        async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/chat/completions", json=BODY,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response:
            assert (await asyncio.wait_for(response.content.read(), 20)).endswith(b"data: [DONE]\n\n")
        assert len(upstream.peers) == 2
        assert upstream.peers[0] == upstream.peers[1], "the upstream connection was not reused"
