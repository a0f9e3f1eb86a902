"""Streams are relayed as they arrive, and a client that leaves closes the upstream.

The upstream here is a small real server whose stream is paced by the test itself, so
"the first event arrived before the upstream finished" is proved by ordering, not time:
the upstream only finishes after the client has seen the first event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from azure_openai_proxy.server.app import GATEWAY
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, gateway_settings
from tests.support import ServerThread, serve

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

        def acquired() -> Any:
            return gateway.app[GATEWAY].current.transport.connections_in_use()  # type: ignore[index]

        for _ in range(100):
            if gateway.call(_async(acquired)) == 0:
                break
            await asyncio.sleep(0.05)
        assert gateway.call(_async(acquired)) == 0, "an upstream connection leaked"


def _async(fn: Callable[[], Any]) -> Callable[[], Any]:
    async def run() -> Any:
        return fn()

    return run
