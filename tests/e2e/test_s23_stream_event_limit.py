"""Through the gateway: a streamed event Azure sends past `upstream.max_answer_bytes` (the
most the gateway holds of a JSON answer) ends the client's stream with an error event in
OpenAI's shape, which the SDK raises, instead of being held without bound; an event under
the limit in the same shape passes. A small real Azure on loopback scripts the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from aiohttp import web
from openai._streaming import SSEDecoder

from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.e2e.pools import sdk
from tests.support import ServerThread, serve

_LIMIT = 64 * 1024
_FRAME = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
          b'"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n')
_LINE = b"data: " + b"y" * 1000 + b"\n"  # a line of an event of many `data:` lines


def _azure(lines: int) -> web.Application:
    """A chat stream: a content frame, then an event of `lines` 1 kB data lines written
    ten lines a write, then a last frame and [DONE]."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(_FRAME % b"first")
            for _ in range(0, lines, 10):
                await response.write(_LINE * 10)
                await asyncio.sleep(0.001)
            await response.write(b"\n" + _FRAME % b"last" + b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:  # the gateway hung up on the event
            pass
        return response

    async def responses(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b'event: response.created\ndata: {"type":"response.created",'
                                 b'"response":{"id":"resp_1"}}\n\nevent: big\n')
            for _ in range(0, lines, 10):
                await response.write(_LINE * 10)
                await asyncio.sleep(0.001)
            await response.write(b"\n")
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    app = web.Application()
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
    app.router.add_post("/openai/responses", responses)
    app.router.add_post("/openai/v1/responses", responses)
    return app


@pytest.fixture(params=[40, 100], ids=["40kB", "100kB"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[ServerThread, int]]:
    with serve(lambda: _azure(request.param)) as azure:
        settings = gateway_settings(azure.url, upstream={"max_answer_bytes": _LIMIT})
        with serve(lambda: create_app(settings)) as server:
            yield server, request.param


def _stream(gateway: ServerThread) -> list[str | None]:
    stream = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    return [chunk.choices[0].delta.content for chunk in stream if chunk.choices]


def test_an_event_past_the_limit_ends_the_stream_with_an_error(
        gateway: tuple[ServerThread, int]) -> None:
    server, lines = gateway
    if lines * len(_LINE) < _LIMIT:  # 40 kB: relayed, a frame of one line with its content
        contents = _stream(server)
        assert contents[0] == "first" and contents[-1] == "last"
        return
    got: list[str | None] = []
    with pytest.raises(openai.APIError) as caught:
        stream = sdk(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
        got.extend(chunk.choices[0].delta.content for chunk in stream if chunk.choices)
    assert got == ["first"]
    assert f"larger than the gateway's limit of {_LIMIT} bytes" in caught.value.message
    assert caught.value.code == "stream_interrupted"
    with pytest.raises(openai.APIError, match="limit of"):  # and serves on, the same
        _stream(server)


def test_a_responses_event_past_the_limit_ends_the_relayed_stream_with_an_error(
        gateway: tuple[ServerThread, int]) -> None:
    """A stream relayed as it comes (its meter decodes it alongside): the meter's event
    past the limit ends it with an error event (`event: error`) after what had passed."""
    server, lines = gateway
    body = b"".join(sdk(server).responses.with_raw_response.create(
        model="gpt-4o", input="hi", stream=True).http_response.iter_bytes())
    assert body.startswith(b"event: response.created\n")
    if lines * len(_LINE) < _LIMIT:
        assert body.endswith(_LINE + b"\n") and b"event: error" not in body
        return
    # The part of the event that had passed is ended by a blank line (its data cut short:
    # nothing can take it back), then the error is an event of its own.
    *_, cut, error = SSEDecoder().iter_bytes(iter([body]))
    assert cut.event == "big" and cut.data.startswith("y" * 1000)
    assert error.event == "error" and error.json()["error"]["code"] == "upstream_event_too_large"
    assert f"limit of {_LIMIT} bytes" in error.json()["error"]["message"]
