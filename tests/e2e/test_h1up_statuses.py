"""Through the gateway, an upstream answering with a status HTTP does not have (000, 999)
or in a transfer-coding other than chunked alone is a 502 upstream_invalid_answer to the
openai SDK, over FastTransport and over aiohttp's client (a SOCKS proxy's, or chosen),
and the gateway serves on. Before: status 000 was a 500 internal_error through aiohttp
(its own HTTP server refused to write it) and waited for the read timeout through fast;
999 went to the client as its status; `gzip, chunked` relayed gzip'd bytes as the body."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence

import openai
import pytest

from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, raw_upstream
from tests.e2e.pools import sdk
from tests.e2e.test_advstream_answers import CHAT as _CHAT
from tests.support import serve

_ZIPPED = gzip.compress(_CHAT)
_ANSWERS = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
          % len(_CHAT) + _CHAT,
    "000": b"HTTP/1.1 000 Odd\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "999": b"HTTP/1.1 999 Odd\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "gzip, chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n" % len(_ZIPPED)
                     + _ZIPPED + b"\r\n0\r\n\r\n",
}


def _script(body: bytes) -> Sequence[Piece]:
    return [_ANSWERS[json.loads(body)["messages"][0]["content"]]]


@pytest.mark.parametrize("client", ["fast", "aiohttp"])
def test_odd_statuses_and_codings_are_502s_and_the_gateway_serves_on(client: str) -> None:
    with raw_upstream(_script) as upstream:
        settings = gateway_settings(upstream.url, max_attempts=1,
                                    upstream={"transport": client, "read_timeout": 5})
        with serve(lambda: create_app(settings)) as gateway:
            api = sdk(gateway)
            for odd in ("000", "999", "gzip, chunked"):
                with pytest.raises(openai.APIStatusError) as caught:
                    api.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": odd}])
                assert caught.value.status_code == 502, (odd, caught.value.body)
                assert caught.value.code == "upstream_invalid_answer", caught.value.body
            answer = api.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "ok"}])
            assert answer.choices[0].message.content == "hi"
