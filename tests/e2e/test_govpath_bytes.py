"""A virtual key's usual chat reaches the emulator (Azure) as the client's own bytes when
no key can be repeated in them (`keys_spelled_once`), and re-encoded from what the
gateway checked when one may be: a repeated `max_tokens` or `content`, however spelled,
never lets Azure read a value the key's limits did not count."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed

__all__ = ["governed"]  # the fixture, used by name

# As the openai SDK writes a body (httpx's `json.dumps`: spaced), with the `user` field
# beside a message of role "user".
_SPACED = (b'{"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, '
           b'{"role": "user", "content": "Where is my parcel?\\nIt was due."}], '
           b'"max_tokens": 5, "temperature": 0.2, "user": "someone"}')


def _post(governed: Governed, secret: str, body: bytes) -> httpx.Response:
    return httpx.post(governed.server.url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {secret}",
                               "Content-Type": "application/json"})


def _sent(emulator: Emulator) -> tuple[str, Any]:
    last = emulator.last()
    return last["body"], last["json"]


def test_a_usual_chat_is_sent_as_the_clients_bytes(governed: Governed,
                                                   emulator: Emulator) -> None:
    _, secret = governed.key("usual", limits=Limits(rpm=100, tpm=100_000))
    assert _post(governed, secret, _SPACED).status_code == 200  # decides the key
    for _ in range(2):  # then its usual path (`Gateway._usual_chat`)
        assert _post(governed, secret, _SPACED).status_code == 200
        assert _sent(emulator)[0] == _SPACED.decode()  # main: re-encoded (no spaces)


@pytest.mark.parametrize(("raw", "checked"), [
    (b'{"model":"gpt-4o","max_tokens":9000,"messages":[{"role":"user","content":"hi"}],'
     b'"max_tokens":5}', {"max_tokens": 5}),
    (b'{"model":"gpt-4o","max_tok\\u0065ns":9000,"max_tokens":5,'
     b'"messages":[{"role":"user","content":"hi"}]}', {"max_tokens": 5}),
    (b'{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"' + b"x" * 4000
     + b'","cont\\u0065nt":"hi"}]}', {"messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_repeated_key_reaches_azure_as_checked(governed: Governed, emulator: Emulator,
                                                 raw: bytes, checked: dict[str, Any]) -> None:
    _, secret = governed.key("usual", limits=Limits(rpm=100, tpm=100_000))
    for _ in range(2):  # the first decides the key; then its usual path
        assert _post(governed, secret, raw).status_code == 200
        text, sent = _sent(emulator)
        assert text == orjson.dumps(orjson.loads(raw)).decode()  # re-encoded: one of each
        assert sent.items() >= checked.items()
