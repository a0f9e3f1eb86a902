"""A deployment whose connections are all busy (`upstream.pool_size`) for longer than
`upstream.pool_timeout`: the request, never sent, fails over to another deployment, or
alone gets a 503 with retry-after. Driven by the official SDK through the gateway."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import MODEL, chat, hits, pool_emulator, sdk
from tests.support import ServerThread, serve

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "held"}}],
}


class HeldAzure:
    """An upstream that answers only when the test lets it; counts what it received."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.requests = 0
        self._release: asyncio.Event | None = None
        self.server: ServerThread | None = None

    def app(self) -> web.Application:
        self._release = asyncio.Event()

        async def chat(request: web.Request) -> web.Response:
            await request.read()
            self.requests += 1
            self.arrived.set()
            assert self._release is not None
            await self._release.wait()
            return web.json_response(CHAT)

        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
        return app

    def release(self) -> None:
        assert self.server is not None and self._release is not None
        self.server.loop.call_soon_threadsafe(self._release.set)


@pytest.fixture
def held() -> Iterator[HeldAzure]:
    azure = HeldAzure()
    with serve(azure.app) as server:
        azure.server = server
        try:
            yield azure
        finally:
            azure.release()


def deployment(name: str, endpoint: str, priority: int) -> dict[str, Any]:
    return {"deployment_name": name, "endpoint": endpoint, "api_key": AZURE_KEY,
            "api_version": "2025-04-01-preview", "priority": priority}


def gateway_over(*members: dict[str, Any]) -> Any:
    config = {"models": {MODEL: list(members)}, "client_keys": [CLIENT_KEY],
              "upstream": {"pool_size": 1, "pool_timeout": 0.05}}
    return serve(lambda: create_app(load_settings(config, {})))


def test_a_busy_pool_fails_over_to_another_deployment(held: HeldAzure) -> None:
    assert held.server is not None
    with pool_emulator() as emulator, gateway_over(
        deployment("dep-a", held.server.url, 1), deployment("dep-b", emulator.url, 2)
    ) as gateway, ThreadPoolExecutor(1) as pool:
        client = sdk(gateway)
        first = pool.submit(chat, client)
        assert held.arrived.wait(10)  # dep-a's only connection is taken
        assert chat(client).choices[0].message.content  # dep-b answered
        assert hits(emulator) == [("dep-b", 200)]
        held.release()
        assert first.result(10).choices[0].message.content == "held"
        assert held.requests == 1  # the second request never reached dep-a


def test_a_busy_pool_alone_is_a_503_with_retry_after(held: HeldAzure) -> None:
    from openai import InternalServerError

    assert held.server is not None
    with gateway_over(deployment("dep-a", held.server.url, 1)) as gateway, \
            ThreadPoolExecutor(1) as pool:
        client = sdk(gateway)
        first = pool.submit(chat, client)
        assert held.arrived.wait(10)
        with pytest.raises(InternalServerError) as caught:
            chat(client)
        response = caught.value.response
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_pool_timeout"
        assert response.headers["retry-after"] == "1"
        held.release()
        assert first.result(10).choices[0].message.content == "held"
        assert held.requests == 1
