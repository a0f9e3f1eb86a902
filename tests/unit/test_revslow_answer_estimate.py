"""A stream cut before Azure's usage is estimated from the answer text relayed by the
same rule as the prompt (`governance.estimate.text_length`: characters for ASCII, UTF-8
bytes outside it). Counted by characters, a Chinese answer cut mid-way was estimated at
a quarter of its tokens (a character is about a token, 3 bytes), while its prompt was
estimated right: a key's budget and TPM charged a quarter for what it was relayed.

Every path that counts: the steady template's `relay()` (the pushed relay's, plain and
padded), the normalizer's `feed()` (the pulled relay's, steady and general) and the
Responses stream's meter."""

from __future__ import annotations

import orjson
import pytest

from azure_openai_proxy.governance.estimate import estimated_usage, text_length
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_stream_normalizer import delta, prompt_frame, role_frame
from tests.unit.test_stream_steady import learned, padded

_TEXTS = ["\u5317\u4eac\u662f\u4e2d\u56fd\u7684\u9996\u90fd", "\u3002\u6771\u4eac",
          "caf\u00e9 \U0001f642", "plain", 'line\n"quoted" \u4e2d']  # the last: escaped
_BYTES = sum(text_length(text) for text in _TEXTS)


@pytest.mark.parametrize("fast", [True, False])
def test_the_normalizer_counts_a_cut_answer_as_a_prompt_is_counted(fast: bool) -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"), fast=fast)
    for frame in [prompt_frame(), role_frame(), delta("x"), *(delta(t) for t in _TEXTS)]:
        normalizer.feed(frame)
    assert normalizer.content_chars == 1 + _BYTES
    usage = estimated_usage(None, normalizer.content_chars)
    assert usage["completion_tokens"] == -(-(1 + _BYTES) // 4)  # on main: 10 for 66


@pytest.mark.parametrize("padding", [None, "k3Zr9"])
def test_the_steady_relay_counts_as_the_general_path(padding: str | None) -> None:
    frames = [prompt_frame(), role_frame(), delta("x")]
    if padding is not None:
        frames = [padded(frame, padding) for frame in frames]
    normalizer, steady = learned(frames)
    for text in _TEXTS:
        frame = delta(text) if padding is None else padded(delta(text), padding)
        assert steady(frame) is not None
    assert normalizer.content_chars == 1 + _BYTES


def test_the_responses_meter_counts_as_the_prompt() -> None:
    meter = ResponsesStreamMeter()
    for n, text in enumerate(_TEXTS):
        kind = "response.output_text.delta" if n % 2 else "response.reasoning_text.delta"
        event = orjson.dumps({"type": kind, "delta": text})
        meter.feed(b"event: " + kind.encode() + b"\ndata: " + event + b"\n\n")
    assert meter.content_chars == _BYTES
