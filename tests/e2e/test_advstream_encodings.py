"""An Azure answer in a content-encoding the gateway cannot decode (session 23's
adversarial run, branch advstream). The gateway never sends Accept-Encoding; gzip and
deflate answers are inflated, and anything else (br, zstd, two codings) had its header
dropped and its compressed bytes relayed as the answer: the SDK got garbage (a
UnicodeDecodeError for a chat, nothing parsable in a stream). Now a 502 naming it,
over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamInvalidAnswer
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, raw_upstream
from tests.e2e.h2raw import RawH2Server, frame, head_block
from tests.e2e.pools import sdk
from tests.e2e.test_advstream_answers import CHAT
from tests.support import ServerThread, serve

STREAM = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
          b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
          b"data: [DONE]\n\n")
CODED = {"identity": lambda body: body, "gzip": gzip.compress, "deflate": zlib.compress,
         "br": lambda body: b"\x1b\x00\x00" + body, "zstd": lambda body: b"\x28\xb5" + body,
         "gzip, br": lambda body: b"\x1f\x8b" + body}


def script(request: bytes) -> Sequence[Piece]:
    prompt = json.loads(request)["messages"][0]["content"]
    coding, _, kind = prompt.partition(" as ")
    body, content_type = (STREAM, b"text/event-stream") if kind == "stream" else (
        CHAT, b"application/json")
    coded = CODED[coding](body)
    return [b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (content_type, coding.encode(), len(coded)) + coded]


@pytest.fixture
def gateway() -> Iterator[ServerThread]:
    with raw_upstream(script) as upstream, serve(
            lambda: create_app(gateway_settings(upstream.url))) as server:
        yield server


def ask(gateway: ServerThread, coding: str, stream: bool = False) -> Any:
    prompt = f"{coding} as stream" if stream else coding
    answer = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=stream)
    return [chunk.choices[0].delta.content for chunk in answer] if stream else (
        answer.choices[0].message.content)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br"])
def test_an_answer_in_an_encoding_not_decoded_is_a_502(
        gateway: ServerThread, coding: str, stream: bool) -> None:
    from openai import InternalServerError

    with pytest.raises(InternalServerError) as caught:
        ask(gateway, coding, stream)
    response = caught.value.response
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_answer"
    assert repr(coding) in error["message"]
    assert ask(gateway, "identity") == "hi"  # serving on


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("coding", ["identity", "gzip", "deflate"])
def test_identity_gzip_and_deflate_answers_are_relayed(
        gateway: ServerThread, coding: str, stream: bool) -> None:
    assert ask(gateway, coding, stream) == (["hi"] if stream else "hi")


async def test_over_http2_the_stream_is_refused_and_the_connection_serves_on() -> None:
    def script(sid: int) -> bytes:
        coding = "br" if sid == 1 else "gzip"
        return (frame(1, 4, sid, head_block((":status", "200"), ("content-encoding", coding)))
                + frame(0, 1, sid, gzip.compress(b"hello")))

    server = RawH2Server(script)
    url = await server.start()
    transport = H2Transport(UpstreamSettings(http2=True, read_timeout=2.0, connect_timeout=2.0))
    with pytest.raises(UpstreamInvalidAnswer, match="'br'"):
        await transport.send(UpstreamRequest("GET", url + "/x", {}))
    answer = await transport.send(UpstreamRequest("GET", url + "/x", {}))
    assert await answer.read(1000) == b"hello"
    answer.close()
    assert server.connections == 1
    assert [sid for _, _, sid, _ in server.frames(3)] == [1]  # RST_STREAM of the first
    await transport.close()
    await server.stop()
