"""`BoundedSseDecoder` (session 23, branch advstream): the events of `SseDecoder`,
however the stream is cut, until one event passes its limit; then
`UpstreamAnswerTooLarge`, its bytes dropped unparsed. The chat normalizer and the
meters of relayed streams use it."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.errors import UpstreamAnswerTooLarge
from azure_openai_proxy.gateway.answerusage import SpeechMeter, SpeechStreamMeter
from azure_openai_proxy.normalize.eventbound import MAX_EVENT_BYTES, BoundedSseDecoder
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import SseDecoder

EVENTS = [b"data: a\n\n", b"data: " + b"b" * 90 + b"\n\n", b"event: x\r\ndata: c\r\n\r\n",
          b": comment\n\n", b"data: d\rdata: e\r\r"]


def decoded(decoder: SseDecoder, stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    raws = [event.raw for piece in pieces for event in decoder.feed(piece)]
    return raws + [event.raw for event in decoder.flush()]


@given(st.lists(st.sampled_from(EVENTS), max_size=30), st.lists(st.integers(0, 10**4)))
def test_under_the_limit_the_events_are_sse_decoders_however_cut(
        events: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(events)
    assert decoded(BoundedSseDecoder(100), stream, cuts) == decoded(SseDecoder(), stream, cuts)


def test_a_long_stream_cut_inside_every_event_never_reaches_the_limit() -> None:
    decoder = BoundedSseDecoder(100)
    event = b"data: " + b"x" * 60 + b"\n\n"  # 68 bytes, cut in two each
    for _ in range(10_000):
        decoder.feed(event[30:] + event[:30])
    assert len(decoder.flush()) == 1


def test_an_event_at_the_limit_passes_and_one_byte_more_is_refused() -> None:
    at_limit = b"data: " + b"x" * 92 + b"\n\n"  # 100 bytes
    decoder = BoundedSseDecoder(100)
    assert decoder.feed(at_limit[:99]) == []
    assert [event.raw for event in decoder.feed(at_limit[99:])] == [at_limit]
    assert decoder.feed(b"data: " + b"y" * 94) == []  # 100 bytes, unfinished
    with pytest.raises(UpstreamAnswerTooLarge, match="limit of 100 bytes"):
        decoder.feed(b"y")
    assert decoder.flush() == []  # dropped, not parsed
    assert [event.data for event in decoder.feed(b"data: z\n\n")] == [b"z"]  # anew


def test_an_endless_line_costs_the_chat_normalizer_about_the_limit_never_a_parse() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    normalizer.feed(b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
                    b'"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamAnswerTooLarge):
            normalizer.feed(b'data: {"choices":[{"delta":{"content":"')
            for _ in range(3 * MAX_EVENT_BYTES // 65536):
                normalizer.feed(b"x" * 65536)  # a new object each, as reads are
        tail = normalizer.finish(upstream_failed="the event was too large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * MAX_EVENT_BYTES  # on main: 24 MiB held, ~350 MiB parsing it
    assert b"the event was too large" in tail and tail.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("meter", [
    lambda: ResponsesStreamMeter(), PictureStreamMeter,
    lambda: SpeechStreamMeter(SpeechMeter("hello", {"model": "gpt-4o-mini-tts"}))])
def test_the_meters_of_relayed_streams_are_bounded_too(meter: object) -> None:
    reader = meter()  # type: ignore[operator]
    reader.feed(b"data: {")
    with pytest.raises(UpstreamAnswerTooLarge):
        for _ in range(65):
            reader.feed(b"x" * 1024 * 1024)
