"""A usual key's streamed chat through a request of another engine than `FastServer`
(review of govcut): `Gateway.handle` sets a `FastRequest`'s head lines itself and wraps
any other request (`limited`: a `LimitedRequest`), so the stream's head carries the
key's limits, not Azure's. No test sent a usual stream through the wrapped branch: with
it removed from `handle`, every test passed."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse
from tests.unit.test_governed_usual import Clock, _Request, one_deployment_settings

_FRAMES = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
           b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
           b"data: [DONE]\n\n")


class _StreamAnswer:
    """Azure's streamed answer, with its own rate-limit headers (the deployment's)."""

    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream",
                                  "x-ratelimit-remaining-tokens": "7"}

    async def read(self, limit: int) -> bytes:
        return _FRAMES

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        yield _FRAMES

    def close(self) -> None:
        pass

    def finish_in_background(self) -> None:
        pass


class _Azure:
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return _StreamAnswer()

    def connections_in_use(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class _Written:
    """The client's stream: its status and head as the relay opened it, and its bytes."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status, self.headers, self.data = status, dict(headers), b""

    async def write(self, data: bytes) -> None:
        self.data += data

    async def end(self, tail: bytes = b"") -> None:
        self.data += tail


class _StreamRequest(_Request):
    opened: _Written | None = None

    def stream(self, status: int, headers: Mapping[str, str]) -> Any:
        self.opened = _Written(status, headers)
        return self.opened


async def _streamed() -> _Written:
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock()
        store = KeyStore.open(Path(directory) / "gateway.db")
        _, secret = store.create_key("k", limits=Limits(rpm=60, tpm=6000), now=clock.now)
        app = create_app(one_deployment_settings(Path(directory)), _Azure(), clock=clock)
        await app.startup()
        try:
            body = orjson.dumps({"model": "gpt-4o", "stream": True, "max_tokens": 5,
                                 "messages": [{"role": "user", "content": "hi"}]})
            # The first request decides the key's plan (`Decided`); the second is the
            # usual one, on the short path (`Gateway._usual_chat`).
            for _ in range(2):
                request = _StreamRequest(secret, body)
                await app(request)
        finally:
            await app.shutdown()
            store.close()
    assert request.opened is not None
    return request.opened


def test_a_usual_stream_of_another_engine_carries_the_keys_limits() -> None:
    written = asyncio.run(_streamed())
    assert written.status == 200
    limits = {name: value for name, value in written.headers.items()
              if name.lower().startswith("x-ratelimit-")}
    assert limits == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "58",
        "x-ratelimit-reset-requests": "2s", "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": limits.get("x-ratelimit-remaining-tokens"),
        "x-ratelimit-reset-tokens": limits.get("x-ratelimit-reset-tokens")}
    assert limits["x-ratelimit-remaining-tokens"] != "7"  # Azure's went
    assert int(limits["x-ratelimit-remaining-tokens"]) < 6000
    assert b"hi" in written.data
