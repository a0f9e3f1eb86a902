"""A checked body (`RequestBody.canonical`: a virtual key's chat) is sent as orjson
writes it, and its re-encoding costs the request path no Python call of ours: the
translator calls `orjson.dumps` itself (a frame was ~400 instructions a governed
request, callgrind). A body orjson cannot write is still the client's 400."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import MalformedBody
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.translation import RequestTranslator
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import classify
from tests.unit.test_governed_usual import _Request
from tests.unit.test_ratelimit import python_calls
from tests.unit.test_translation_routes import _settings

_CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
# Repeats `max_tokens`: the raw bytes say 9000 first, the parsed body (the last) 5.
_RAW = (b'{"model":"gpt-4o","max_tokens":9000,"messages":[{"role":"user","content":"hi"}],'
        b'"max_tokens":5}')


def _send(translator: RequestTranslator, body: dict[str, Any], canonical: bool) -> Any:
    target = classify("POST", "/v1/chat/completions", translator.settings.api_base)
    checked = RequestBody(json=body, raw=_RAW)
    checked.canonical = canonical
    request, _ = translator.translate(
        _Request("client-key", _RAW), target, Caller(None), checked,
        translator.settings.deployments[0], "gpt-4o", RequestRecord("r", "POST"))
    return request


def test_a_checked_body_is_sent_as_parsed() -> None:
    translator = RequestTranslator(_settings())
    assert _send(translator, _CHAT, False).body == _RAW  # unchecked: the client's bytes
    assert orjson.loads(_send(translator, _CHAT, True).body) == _CHAT
    assert _send(translator, _CHAT, True).body == orjson.dumps(_CHAT)


def test_re_encoding_a_checked_body_calls_no_python_function() -> None:
    translator = RequestTranslator(_settings())
    _send(translator, _CHAT, True)  # the route remembered
    as_sent = python_calls(lambda: _send(translator, _CHAT, False))
    assert python_calls(lambda: _send(translator, _CHAT, True)) == as_sent


def test_a_body_too_deep_to_write_is_the_clients_error() -> None:
    deep: Any = "x"
    for _ in range(300):  # orjson reads 1,024 levels and writes 254
        deep = [deep]
    with pytest.raises(MalformedBody, match="nested too deeply"):
        _send(RequestTranslator(_settings()), {**_CHAT, "messages": deep}, True)
