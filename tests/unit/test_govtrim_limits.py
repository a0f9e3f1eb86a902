"""A virtual key's answers carry the key's `x-ratelimit-*`, never Azure's: the relay does
not relay Azure's for a key's request (`relayed_response_headers(..., limits=False)`,
by the key's id in the record), a whole answer gets the key's as head lines
(`with_lines`), and a `FastRequest` puts them on a streamed answer's head itself
(`head_lines`, set by `limited`: no `LimitedRequest` per request), with the same bytes
as the wrapped request gives."""

from __future__ import annotations

import asyncio
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.limitheaders import LimitedRequest, limited, with_lines
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.translate import relayed_response_headers
from azure_openai_proxy.upstream.fast import FastResponse
from tests.unit.test_relay_governed import AZURE_HEAD, KeyLimits
from tests.unit.test_relay_push import PROMPT, Exchange, Pulled, wire
from tests.unit.test_stream_steady import long_stream

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
    answer: Any = await relay(limited(request, KeyLimits.head_lines) if key_id else request,
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


class _HeadLinesExchange(Exchange):
    """`Exchange` with a key's request as the pipeline now sends it: the `FastRequest`
    itself, its `head_lines` set (`limited`), the key's id in the record."""

    wrapped = False

    def start(self, first: bytes) -> None:
        self.conn.data_received(self.head + first)
        response = FastResponse(self.owner, self.conn)
        answer: Any = response if self.pushed else Pulled(response)
        request = FastRequest(self.channel, "POST", "/v1/chat/completions",
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        self.record.key_id = "key-1"
        sent = (LimitedRequest(request, KeyLimits.head_lines) if self.wrapped
                else limited(request, KeyLimits.head_lines))
        assert (sent is request) is not self.wrapped
        self.task = asyncio.get_running_loop().create_task(relay(
            sent, "chat/completions", answer, self.policy, self.policy.client_model,
            self.policy.keep_azure_fields, self.record, body=RequestBody(PROMPT)))


class _WrappedExchange(_HeadLinesExchange):
    wrapped = True


def test_a_keys_stream_head_carries_its_lines_as_the_wrapped_request_gave_them() -> None:
    async def run() -> None:
        policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
        frames = long_stream()
        reads = [wire(frames[:3], end=False), wire(frames[3:])]
        for pushed in (True, False):
            relayed = await _HeadLinesExchange(pushed=pushed, policy=policy,
                                               head=AZURE_HEAD).run(reads)
            wrapped = await _WrappedExchange(pushed=pushed, policy=policy,
                                             head=AZURE_HEAD).run(reads)
            head, _, rest = relayed.partition(b"\r\n\r\n")
            assert rest == wrapped.partition(b"\r\n\r\n")[2]
            lines = head.split(b"\r\n")[1:]
            assert sorted(lines) == sorted(wrapped.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:])
            assert b"x-ratelimit-limit-requests: 10" in lines
            assert b"x-ratelimit-remaining-requests: 9" in lines
            assert b"999" not in head  # Azure's limit went
            assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")

    asyncio.run(run())
