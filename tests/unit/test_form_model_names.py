"""A key limited to some models has a multipart form (audio, image edits) judged by its
part named `model` (`name="model"`, as the gateway reads it): a text part naming it in
other letters (`Model`) or another syntax (unquoted, `name*=`) is refused, as a JSON body's
`Model` is (`check_top_names`): an upstream reading form names case-insensitively could
bind that one, a model the key may not use."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from tests.unit.test_governed_usual import Clock, _azure_answer, _Pair, _Request

_BOUNDARY = "b0undary"


def _form(*parts: tuple[str, bytes]) -> bytes:
    """A form of `(content-disposition parameters, value)` parts."""
    out = b""
    for disposition, value in parts:
        out += (f"--{_BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n"
                .encode() + value + b"\r\n")
    return out + f"--{_BOUNDARY}--\r\n".encode()


class _FormRequest(_Request):
    def __init__(self, secret: str, body: bytes) -> None:
        super().__init__(secret, body)
        self.target = "/v1/audio/transcriptions"
        self.headers = CIMultiDictProxy(CIMultiDict({
            "Authorization": "Bearer " + secret,
            "Content-Type": f"multipart/form-data; boundary={_BOUNDARY}",
            "Content-Length": str(len(body))}))


async def _answer(models: tuple[str, ...], body: bytes) -> tuple[int, object, int]:
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            _, secret = pair.store.create_key("limited", models=models, limits=Limits(rpm=50),
                                              now=pair.clock.now)
            await pair.reload()
            app, azure = pair.apps[0], pair.azures[0]
            task = asyncio.ensure_future(app(_FormRequest(secret, body)))
            for _ in range(1000):  # loop turns until it is at Azure or answered
                if task.done() or azure.waiting:
                    break
                await asyncio.sleep(0)
            sent = len(azure.waiting)
            if sent:
                azure.waiting.pop().set_result(_azure_answer((1, 1), 200))
            answer = await task
            assert isinstance(answer, Answer)
            return answer.status, orjson.loads(answer.body), sent
        finally:
            await pair.close()


_AUDIO = ('name="file"; filename="a.wav"', b"RIFF....WAVE")


@pytest.mark.parametrize("other", [
    'name="Model"', 'name="MODEL"', "name=Model", "name=model", "name*=utf-8''Model",
    "name*=utf-8''model"])
def test_a_limited_keys_form_naming_model_otherwise_is_refused(other: str) -> None:
    # In other letters: refused (`Model`). The same name in another syntax (a token, as
    # .NET's SDKs send it, or `name*=`) is read as `model` (gateway/formparts.py): given
    # twice, refused too, whichever comes first.
    for parts in (((other, b"o3-mini"), ('name="model"', b"gpt-4o")),
                  (('name="model"', b"gpt-4o"), (other, b"o3-mini"))):
        body = _form(*parts, _AUDIO)
        status, error, sent = asyncio.run(_answer(("gpt-4o",), body))
        assert sent == 0 and status in (400, 404)
        assert isinstance(error, dict)
        if status == 404:  # o3-mini read first, as the upstream reads it: not the key's
            assert other in ("name=model", "name*=utf-8''model") and parts[0][0] == other
        else:  # `name*` alone: not read as any name (gateway/formparts.py)
            assert error["error"]["param"] == ("model" if "*" not in other else None)


def test_a_plain_form_and_a_file_named_model_go_through() -> None:
    plain = _form(('name="model"', b"gpt-4o"), ('name="language"', b"en"), _AUDIO)
    assert asyncio.run(_answer(("gpt-4o",), plain))[::2] == (200, 1)
    # A file part is not a text field, whatever its name.
    named = _form(('name="model"', b"gpt-4o"), ('name="Model"; filename="m.txt"', b"x"),
                  _AUDIO)
    assert asyncio.run(_answer(("gpt-4o",), named))[::2] == (200, 1)


def test_a_key_without_an_allow_list_is_refused_a_form_naming_model_otherwise() -> None:
    # Since session 18 (its fourth review) every virtual key's form is judged so: its
    # model prices it, and on an `api: v1` deployment runs it (it went through before).
    other = _form(('name="Model"', b"o3-mini"), ('name="model"', b"gpt-4o"), _AUDIO)
    assert asyncio.run(_answer((), other))[::2] == (400, 0)
