"""Through the gateway, Azure's streams scripted by a small real Azure on loopback:

- an event sent past `upstream.max_answer_bytes` (the most the gateway holds of a JSON
  answer) ends the client's stream with an error in OpenAI's shape instead of being held
  without bound, and an event under the limit in the same shape passes;
- at the default settings a chat event is held up to sse.py's `MAX_EVENT_BYTES`, then
  Azure's connection is closed (session 23's adversarial run, branch advstream: an endless
  line was buffered for as long as Azure sent it and parsed at the stream's end);
- a stream relayed as Azure sends it (Responses, pictures, speech: not normalized) that
  fails in the middle of an event ends with the gateway's `event: error` as an event of its
  own, after a blank line ends the part that had passed (a client's parser would otherwise
  read the error's lines into that unfinished event)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import openai
import pytest
from aiohttp import web
from openai._streaming import SSEDecoder

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.sse import MAX_EVENT_BYTES
from tests.e2e.conftest import gateway_settings
from tests.e2e.pools import sdk
from tests.support import ServerThread, serve

_LIMIT = 64 * 1024
_FRAME = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
          b'"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n')
_LINE = b"data: " + b"y" * 1000 + b"\n"  # a line of an event of many `data:` lines
_CREATED = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1"}}\n\n'
_Script = Callable[[str], Iterable[bytes]]  # the writes of Azure's answer, by operation


def _azure(script: _Script, pause: float) -> web.Application:
    """Answers chat completions and Responses with `script`'s writes as text/event-stream,
    `pause` seconds after each."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for piece in script(request.path.rsplit("/", 1)[-1]):
                await response.write(piece)
                await asyncio.sleep(pause)
            await response.write_eof()
        except ConnectionError:  # the gateway hung up
            pass
        return response

    app = web.Application()
    for path in ("/openai/deployments/{deployment}/chat/completions", "/openai/responses",
                 "/openai/v1/responses"):
        app.router.add_post(path, answer)
    return app


@contextlib.contextmanager
def _gateway(script: _Script, pause: float, **upstream: Any) -> Iterator[ServerThread]:
    with serve(lambda: _azure(script, pause)) as azure:
        settings = gateway_settings(azure.url, upstream=upstream)
        with serve(lambda: create_app(settings)) as server:
            yield server


def _big_event(lines: int) -> _Script:
    """A first event, then one of `lines` 1 kB data lines written ten lines a write, then
    (chat) a last frame and [DONE]."""
    def script(operation: str) -> list[bytes]:
        big = [_LINE * 10] * (lines // 10)
        if operation == "completions":
            return [_FRAME % b"first", *big, b"\n" + _FRAME % b"last" + b"data: [DONE]\n\n"]
        return [_CREATED + b"event: big\n", *big, b"\n"]
    return script


@pytest.fixture(params=[40, 100], ids=["40kB", "100kB"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[ServerThread, int]]:
    with _gateway(_big_event(request.param), 0.001, max_answer_bytes=_LIMIT) as server:
        yield server, request.param


def _stream(gateway: ServerThread) -> list[str | None]:
    stream = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    return [chunk.choices[0].delta.content for chunk in stream if chunk.choices]


def _relayed(gateway: ServerThread) -> list[Any]:
    """A Responses stream's events as the SDK's parser reads the bytes the client got."""
    body = b"".join(sdk(gateway).responses.with_raw_response.create(
        model="gpt-4o", input="hi", stream=True).http_response.iter_bytes())
    assert body.startswith(_CREATED)
    return list(SSEDecoder().iter_bytes(iter([body])))


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
    past the limit ends it with an error event after what had passed."""
    server, lines = gateway
    events = _relayed(server)
    if lines * len(_LINE) < _LIMIT:
        assert [e.event for e in events] == ["response.created", "big"]
        return
    # The part of the event that had passed is ended by a blank line (its data cut short:
    # nothing can take it back), then the error is an event of its own.
    *_, cut, error = events
    assert cut.event == "big" and cut.data.startswith("y" * 1000)
    assert error.event == "error" and error.json()["error"]["code"] == "upstream_event_too_large"
    assert f"limit of {_LIMIT} bytes" in error.json()["error"]["message"]


def test_an_upstream_failure_mid_event_is_an_event_of_its_own() -> None:
    """Azure stops sending in the middle of an event, past the gateway's read timeout."""
    def stalled(operation: str) -> list[bytes]:
        return [_CREATED + b'event: response.output_text.delta\ndata: {"ty']

    with _gateway(stalled, 5, read_timeout=0.5) as server:
        events = _relayed(server)
    assert [e.event for e in events] == ["response.created", "response.output_text.delta",
                                         "error"]
    assert events[1].data == '{"ty'  # what had passed of it: cut short, nothing to take back
    assert events[2].json()["error"]["code"] == "upstream_timeout"


def test_at_the_default_settings_a_chat_event_past_its_bound_closes_azures_connection() -> None:
    """`upstream.max_answer_bytes` at its 256 MiB: an endless line of a chat stream is held
    up to `MAX_EVENT_BYTES`, then the client gets the error and Azure's connection is closed,
    never read to its end; the next request is served."""
    piece, pieces = 64 * 1024, 3 * MAX_EVENT_BYTES // (64 * 1024)
    pulled: list[int] = []
    stopped = threading.Event()

    def endless(operation: str) -> Iterator[bytes]:
        if pulled:  # the next request's
            yield _FRAME % b"again" + b"data: [DONE]\n\n"
            return
        try:
            yield _FRAME % b"first" + b'data: {"id":"c1","choices":[{"delta":{"content":"'
            for _ in range(pieces):
                pulled.append(piece)
                yield b"x" * piece
        finally:  # a write failed (the gateway hung up), or all were written
            stopped.set()

    with _gateway(endless, 0) as server:
        got: list[str | None] = []
        with pytest.raises(openai.APIError, match=f"limit of {MAX_EVENT_BYTES} bytes"):
            stream = sdk(server).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "endless"}], stream=True)
            got.extend(chunk.choices[0].delta.content for chunk in stream if chunk.choices)
        assert got == ["first"]
        assert stopped.wait(10)  # not left blocked in a write: the connection was closed
        assert sum(pulled) < 2 * MAX_EVENT_BYTES  # about one bound in (socket buffers aside)
        assert _stream(server) == ["again"]
