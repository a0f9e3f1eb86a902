"""A steady stream's frame that is the learned frame with another choices array (the
finish frame, a content frame with other filter results) is relayed by the template's
splice (`SteadyFrameTemplate.choices`, `ChatStreamNormalizer._other_choice`) instead of
being parsed and written again whole, and a hidden usage frame's `usage` is read
without the rest (`SteadyFrameTemplate.usage`): held here to the general path
(`fast=False`) byte for byte and in its counts, and refused for every frame whose bytes
the general path would write otherwise."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from azure_openai_proxy.normalize import stream
from azure_openai_proxy.normalize.steady import SteadyFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_stream_normalizer import (
    CREATED,
    DONE,
    FILTERS,
    chunk,
    delta,
    finish_frame,
    prompt_frame,
    role_frame,
    usage_frame,
)
from tests.unit.test_stream_steady import POLICIES, relay

_LEARNED = delta(" x")
_FINISH = finish_frame("stop")
_LOW = {**FILTERS, "hate": {"filtered": False, "severity": "low"}}
# Frames of the learned stream that the general path reads otherwise, or writes in
# another spelling: each must be refused by `choices()` or come out the same anyway.
_ODD = [
    _FINISH.replace(b'"delta":{}', b'"delta": {}'),  # not orjson's form
    _FINISH.replace(b'"index":0,', b'"index":0,"index":1,'),  # a repeated key
    _FINISH.replace(b'"logprobs":null}]', b'"logprobs":null}],"choices":[{"delta":{}}]'),
    _FINISH.replace(b'"logprobs":null}]', b'"logprobs":null},{"delta":{},"index":1}]'),
    _FINISH.replace(b'"delta":{},', b""),  # no delta: the general path's rules
    _FINISH.replace(b'"delta":{}', b'"text":"legacy"'),
    _FINISH.replace(b'{"content_filter_results":{},"delta":{},"finish_reason":"stop",'
                    b'"index":0,"logprobs":null}', b"[]"),
    _FINISH.replace(b'"stop"', b'"content_filter"'),
    _FINISH.replace(b'"chatcmpl', b'"chatcmpl-other'),  # another id: not the suffix
    _FINISH.replace(b'"created":%d' % CREATED, b'"created":%d' % (CREATED + 1)),  # same size
    _FINISH.replace(b'"delta":{}', b'"delta":{"content":"\\u00e9"}'),
    b"data: " + _FINISH[6:-2].replace(b"}]", b"}]\n") + b"\n\n",
]


def _stream(*tail: bytes) -> list[bytes]:
    return [prompt_frame(), role_frame(), _LEARNED, delta(" y"), *tail, usage_frame(), DONE]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("odd", [_FINISH, delta(" z", filters=_LOW),
                                 finish_frame("length"), finish_frame("content_filter", _LOW),
                                 *_ODD])
def test_another_choice_comes_out_as_the_general_paths(policy: StreamPolicy,
                                                       odd: bytes) -> None:
    frames = _stream(odd, delta(" after"), _FINISH)
    fast = relay(frames, policy, fast=True)
    assert fast == relay(frames, policy, fast=False)
    # and split anywhere around the frame (the decoder's path, not `single`)
    joined = b"".join(frames)
    at = joined.index(odd) + len(odd) // 2
    assert relay([joined[:at], joined[at:]], policy, fast=True) == fast


def test_choices_takes_only_the_learned_frame_with_another_array() -> None:
    data = _LEARNED[6:-2]
    template = SteadyFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    finish = _FINISH[6:-2]
    assert template.choices(finish) == orjson.loads(finish)["choices"]
    assert template.relayed(finish) == b"data: " + finish.replace(
        b'"model":"' + orjson.loads(finish)["model"].encode() + b'"', b'"model":"gpt-4o"'
    ) + b"\n\n"
    for odd in [*_ODD[:3], *_ODD[8:10]]:
        assert template.choices(odd[6:-2]) is None
    assert template.choices(usage_frame()[6:-2]) is None  # other members
    assert template.choices(chunk({"delta": {}})[6:-2] + b" ") is None


def test_the_finish_frame_of_a_steady_stream_is_not_parsed_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []

    class Counted:
        JSONDecodeError = orjson.JSONDecodeError
        dumps = staticmethod(orjson.dumps)

        @staticmethod
        def loads(data: bytes) -> Any:
            parsed.append(data)
            return orjson.loads(data)

    monkeypatch.setattr(stream, "orjson", Counted)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in _stream()[:4]:
        normalizer.feed(frame)
    parsed.clear()
    out = normalizer.feed(_FINISH)
    assert parsed == [] and out.endswith(b'"model":"gpt-4o","object":"chat.completion.chunk",'
                                         b'"system_fingerprint":"fp_5b26d85e12"}\n\n')
    assert normalizer.finish_reasons == {0: "stop"}


_USAGE = usage_frame()
_ODD_USAGE = [
    _USAGE.replace(b'"usage":{', b'"usage": {'),  # spelled otherwise: the value is the same
    _USAGE.replace(b'}}\n\n', b'},"usage":null}\n\n'),  # a repeated key, null last
    _USAGE.replace(b'}}\n\n', b'},"x":1}\n\n'),  # a member after it
    _USAGE.replace(b'"choices":[]', b'"choices":[{"delta":{},"index":0}]'),
    _USAGE.replace(b'"chatcmpl', b'"chatcmpl-other'),
    _USAGE.replace(b'"created":%d' % CREATED, b'"created":%d' % (CREATED + 1)),  # same size
    _USAGE.replace(b'"usage":{', b'"usage":[{').replace(b'}}\n\n', b'}]}\n\n'),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("usage", [_USAGE, *_ODD_USAGE])
def test_the_usage_frame_comes_out_as_the_general_paths(policy: StreamPolicy,
                                                       usage: bytes) -> None:
    frames = [prompt_frame(), role_frame(), _LEARNED, delta(" y"), _FINISH, usage, DONE]
    assert relay(frames, policy, fast=True) == relay(frames, policy, fast=False)


def test_usage_takes_only_the_usage_frame_after_the_learned_members() -> None:
    data = _LEARNED[6:-2]
    template = SteadyFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    assert template.usage(_USAGE[6:-2]) == orjson.loads(_USAGE[6:-2])["usage"]
    # JSON's whitespace before the value is the value's: the general path reads it so.
    assert template.usage(_ODD_USAGE[0][6:-2]) == orjson.loads(_USAGE[6:-2])["usage"]
    for odd in _ODD_USAGE[1:]:
        assert template.usage(odd[6:-2]) is None
    assert template.usage(_FINISH[6:-2]) is None
