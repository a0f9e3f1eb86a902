"""A virtual key's usual chat body is sent as the client's bytes when they are proved to
repeat no key (`requestbody.colons_are_keys`), and as the gateway read it otherwise
(issue 13: the re-encode it spares costs an orjson.dumps per request)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _post(governed: Governed, secret: str, body: bytes) -> None:
    reply = httpx.post(governed.server.url + "/v1/chat/completions", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {secret}",
                                "Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text


def test_a_usual_chat_that_repeats_no_key_is_sent_as_it_came(
        governed: Governed, emulator: Emulator) -> None:
    """Spacing and all (before: re-encoded, compact)."""
    _, secret = governed.key("a", models=("gpt-4o",))
    body = (b'{"model" : "gpt-4o",\n  "max_tokens": 7, "messages": [ {"role": "user", '
            b'"content": "hi there"} ]}')
    _post(governed, secret, body)
    sent = emulator.last()
    assert sent["body"].encode() == body


@pytest.mark.parametrize(("body", "read"), [
    # A colon in the prompt: not told apart from a repeated key, so re-encoded.
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "at 12:00"}]}',
     {"model": "gpt-4o", "messages": [{"role": "user", "content": "at 12:00"}]}),
    (b'{"model": "gpt-4o", "max_tokens": 4000, "messages": [{"role": "user", '
     b'"content": "hi"}], "max_tokens": 5}',
     {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "long", '
     b'"cont\\u0065nt": "hi"}]}',
     {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
])
def test_any_other_usual_chat_is_sent_as_the_gateway_read_it(
        governed: Governed, emulator: Emulator, body: bytes, read: dict[str, object]) -> None:
    _, secret = governed.key("a", models=("gpt-4o",))
    _post(governed, secret, body)
    sent = emulator.last()["body"]
    assert orjson.loads(sent) == read
    assert sent.encode() == orjson.dumps(read)  # the parse, re-encoded
