"""A virtual key's answers carry the key's `x-ratelimit-*`, never Azure's: the relay does
not relay Azure's for a key's request (`relayed_response_headers(..., limits=False)`,
by the key's id in the record), and a whole answer gets the key's as head lines
(`with_lines`), with no pass over the answer's names (`apply_lines`)."""

from __future__ import annotations

import asyncio
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.limitheaders import LimitedRequest, with_lines
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.translate import relayed_response_headers
from tests.unit.test_relay_governed import KeyLimits
from tests.unit.test_relay_push import Exchange

_AZURES = {"Content-Type": "application/json", "X-RateLimit-Remaining-Tokens": "7",
           "x-ratelimit-limit-requests": "6000", "X-RATELIMIT-RESET-REQUESTS": "1s",
           "apim-request-id": "r-1", "Server": "azure"}


def test_a_keys_answer_relays_none_of_azures_limits_in_any_case() -> None:
    for _ in range(2):  # the names judged once each, in both tables: the same answers
        assert relayed_response_headers(_AZURES, False) == {
            "content-type": "application/json", "apim-request-id": "r-1"}
        assert relayed_response_headers(_AZURES) == {
            "content-type": "application/json", "x-ratelimit-remaining-tokens": "7",
            "x-ratelimit-limit-requests": "6000", "x-ratelimit-reset-requests": "1s",
            "apim-request-id": "r-1"}
    plain = {"Content-Type": "application/json", "x-request-id": "q"}
    assert relayed_response_headers(plain, False) == relayed_response_headers(plain) == {
        "content-type": "application/json", "x-request-id": "q"}


class _Answer:
    """Azure's JSON answer, with or without its rate-limit headers."""

    status = 200

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    async def read(self, limit: int) -> bytes:
        return b'{"id":"x","object":"chat.completion","choices":[]}'

    def close(self) -> None:
        pass


async def _relayed(headers: dict[str, str], key_id: str | None) -> Answer:
    exchange = Exchange(pushed=False, policy=StreamPolicy(client_model=None))
    exchange.record.key_id = key_id
    request = FastRequest(exchange.channel, "POST", "/v1/chat/completions",
                          CIMultiDictProxy(CIMultiDict()), True, True, None, None)
    answer: Any = await relay(LimitedRequest(request, KeyLimits.head_lines) if key_id else request,
                              "chat/completions", _Answer(headers), None, None, False,
                              exchange.record)
    assert isinstance(answer, Answer)
    return answer


def test_a_keys_whole_answer_has_the_keys_limits_and_a_static_keys_azures() -> None:
    async def run() -> None:
        for headers in (_AZURES, {"content-type": "application/json"}):
            keys = with_lines(await _relayed(dict(headers), "key-1"), KeyLimits.head_lines)
            assert isinstance(keys, Answer)
            assert not [name for name in keys.headers if name.lower().startswith("x-ratelimit")]
            assert keys.head_lines == KeyLimits.head_lines
            static = await _relayed(dict(headers), None)
            assert static.head_lines == b""
            assert {name: value for name, value in static.headers.items()
                    if name.startswith("x-ratelimit")} == (
                {"x-ratelimit-remaining-tokens": "7", "x-ratelimit-limit-requests": "6000",
                 "x-ratelimit-reset-requests": "1s"} if headers is _AZURES else {})

    asyncio.run(run())
