"""The bound each reader of Azure's streams puts on one event (sse.py's `MAX_EVENT_BYTES`
for the chat normalizer, `MAX_RELAYED_EVENT_BYTES` for the meters of relayed streams),
whatever larger limit the relay passes (`upstream.max_answer_bytes`, 256 MiB by
default). `SseDecoder`'s own rules for the limit are in test_sse_reference.py."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from azure_openai_proxy.errors import UpstreamEventTooLarge
from azure_openai_proxy.gateway.answerusage import SpeechMeter, SpeechStreamMeter
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import MAX_EVENT_BYTES, MAX_RELAYED_EVENT_BYTES

_SETTING = 256 * 1024 * 1024  # `upstream.max_answer_bytes`' default, what the relay passes
_READ = 64 * 1024


def test_an_endless_line_costs_the_chat_normalizer_about_its_bound_never_a_parse() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"), _SETTING)
    normalizer.feed(b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
                    b'"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamEventTooLarge, match=f"limit of {MAX_EVENT_BYTES} bytes"):
            normalizer.feed(b'data: {"choices":[{"delta":{"content":"')
            for _ in range(3 * MAX_EVENT_BYTES // _READ):
                normalizer.feed(b"x" * _READ)  # a new object each, as reads are
        tail = normalizer.finish(upstream_failed="the event was too large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Held up to the bound, then dropped: never the 24 MiB fed, nor ~14 times it parsing.
    assert peak < 1.5 * MAX_EVENT_BYTES
    assert b"the event was too large" in tail and tail.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("meter", [
    lambda: ResponsesStreamMeter(event_limit=_SETTING), lambda: PictureStreamMeter(_SETTING),
    lambda: SpeechStreamMeter(SpeechMeter("hello", {"model": "gpt-4o-mini-tts"}), _SETTING)],
    ids=["responses", "picture", "speech"])
def test_the_meters_of_relayed_streams_hold_an_event_up_to_their_bound(
        meter: Callable[[], ResponsesStreamMeter | PictureStreamMeter | SpeechStreamMeter],
) -> None:
    reader = meter()
    reader.feed(b"data: {")
    for _ in range(MAX_RELAYED_EVENT_BYTES // _READ - 1):
        reader.feed(b"x" * _READ)
    reader.feed(b"x" * (_READ - len(b"data: {")))  # the bound, held
    with pytest.raises(UpstreamEventTooLarge, match=f"limit of {MAX_RELAYED_EVENT_BYTES} "):
        reader.feed(b"x")
