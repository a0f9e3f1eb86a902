"""An endless stream event from upstream (session 23's adversarial run, branch
advstream): a chat stream whose event never ends (one line of 24 MiB, no blank line) was
buffered whole by the gateway for as long as Azure sent it, and parsed at the stream's
end (a 64 MiB line peaked near 900 MiB). Past `MAX_EVENT_BYTES` the client now gets the
stream's error event at once, Azure's connection is closed, and the gateway serves on."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.normalize.eventbound import MAX_EVENT_BYTES
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, raw_upstream
from tests.e2e.pools import sdk
from tests.support import serve

PIECE = 64 * 1024
PIECES = 3 * MAX_EVENT_BYTES // PIECE
FRAME = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
         b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n')


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def script(request: bytes) -> Sequence[Piece]:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    if json.loads(request)["messages"][0]["content"] == "ok":
        return [head + chunk(FRAME) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"]
    endless = [chunk(b'data: {"id":"c1","choices":[{"delta":{"content":"')]
    endless += [chunk(b"x" * PIECE) for _ in range(PIECES)]
    return [head + chunk(FRAME), *endless, None]


def test_an_endless_event_ends_the_stream_with_an_error_and_closes_azures_connection() -> None:
    from openai import APIError

    with raw_upstream(script) as upstream, serve(
            lambda: create_app(gateway_settings(upstream.url))) as gateway:
        client = sdk(gateway)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "endless"}], stream=True)
        got = []
        with pytest.raises(APIError, match=f"larger than the gateway's limit of {MAX_EVENT_BYTES}"):
            for event in stream:
                got.append(event.choices[0].delta.content)
        assert got == ["hi"]
        # Not read to its end: the connection was closed about one limit in (socket buffers
        # aside).
        assert upstream.written < 2 * MAX_EVENT_BYTES
        again = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "ok"}], stream=True)
        assert [event.choices[0].delta.content for event in again] == ["hi"]
