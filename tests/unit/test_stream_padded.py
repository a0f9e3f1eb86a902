"""gpt-5's padded chunks (`PaddedFrameTemplate`, `normalize/steady.py`) against the
general path (`ChatStreamNormalizer(..., fast=False)`), byte for byte and in the counts,
with what `test_stream_steady.py`'s paddings do not reach: paddings written as raw bytes
(JSON escapes such as `\\u00e9` and `\\/`, which orjson never writes, bytes that are not
UTF-8, 10 KB), the member on every frame that has a `model` (the usage frame, the async
filter's annotations, the prompt filter's frame), frames without it among padded ones,
Azure's model changing mid-stream, two choices, logprobs, tool calls, content that spells
the member, and any split into reads for both `feed()` and the pushed relay."""

from __future__ import annotations

import sys

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.normalize.steady import PaddedFrameTemplate, SteadyFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer
from tests.unit.test_stream_normalizer import AZURE_MODEL, TOOL_CALLS
from tests.unit.test_stream_steady import (
    FILTERED_MID_STREAM,
    POLICIES,
    WORDS,
    cut_anywhere,
    gpt5_stream,
    long_stream,
    relay,
    relay_by_pieces,
)

# Paddings as the bytes between the member's quotes: plain ones the fast path takes,
# and spellings it must leave to the general path (which re-writes or drops the frame).
RAW_PADDINGS = [b"k3Zr9", b"", b"0123456789", b"\xc3\xa9", b"\xf0\x9f\x99\x82", b"\\u00e9",
                b"\\/", b"\\u0041", b'a\\"b', b"\xff", b"\xed\xa0\x80", b"\x7f", b"\xe2\x80\xa8",
                b" ", AZURE_MODEL.encode(), b"chat.completion.chunk", b'a","obfuscation":"b',
                b'a","model":"z', b"x" * 10_000]
TEXTS = [*WORDS, '"obfuscation":"x"', '","obfuscation":"', "\u00e9\U0001f642"]
LOGPROBS = (b'"logprobs":{"content":[{"bytes":[97],"logprob":-0.1,"token":"a",'
            b'"top_logprobs":[]}]}')


def with_padding(event: bytes, padding: bytes) -> bytes:
    """`event` with `"obfuscation":"<padding>"` after its `model`, the padding's bytes as
    they are (not written by orjson); an event without a `model` unchanged."""
    if not event.startswith(b"data: {"):
        return event
    model = orjson.loads(event[6:]).get("model")
    if model is None:
        return event
    member = b'"model":' + orjson.dumps(model)
    return event.replace(member, member + b',"obfuscation":"' + padding + b'"', 1)


def two_choices(event: bytes) -> bytes:
    """The event with its one choice twice (the second at index 1)."""
    obj = orjson.loads(event[6:])
    obj["choices"].append({**obj["choices"][0], "index": 1})
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@st.composite
def padded_streams(draw: st.DrawFn) -> list[bytes]:
    """A chat stream whose frames are padded as gpt-5's, or not, or otherwise changed."""
    base = draw(st.sampled_from(["long", "tools", "filtered", "gpt5"]))
    if base == "long":
        texts = draw(st.lists(st.sampled_from(TEXTS) | st.text(max_size=8), min_size=1,
                              max_size=10))
        frames = long_stream(texts, annotate=draw(st.booleans()))
    else:
        frames = {"tools": TOOL_CALLS, "filtered": FILTERED_MID_STREAM,
                  "gpt5": gpt5_stream(include_obfuscation=False)}[base]
    out = []
    for event in frames:
        change = draw(st.sampled_from(["pad", "pad", "pad", "raw", "none", "model", "two",
                                       "logprobs"]))
        if change in ("pad", "raw"):
            plain = st.sampled_from([b"k3Zr9", b"ZGF", b"lRK2aBv", b""])
            event = with_padding(event, draw(plain if change == "pad"
                                             else st.sampled_from(RAW_PADDINGS)))
        elif change == "model":
            event = with_padding(event.replace(AZURE_MODEL.encode(), b"gpt-4o-2024-11-20"),
                                 b"k3Zr9")
        elif change == "two" and event.startswith(b'data: {"choices":[{'):
            event = with_padding(two_choices(event), b"k3Zr9")
        elif change == "logprobs":
            event = with_padding(event.replace(b'"logprobs":null', LOGPROBS), b"k3Zr9")
        out.append(event)
    return out


@settings(max_examples=300, deadline=None)
@given(padded_streams(), st.data())
def test_raw_paddings_on_any_frame_give_the_general_paths_bytes_and_counts(
        frames: list[bytes], data: st.DataObject) -> None:
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    assert relay(frames, policy, fast=True) == expected
    assert relay_by_pieces(frames, policy) == expected
    pieces = cut_anywhere(frames, data)
    assert relay(pieces, policy, fast=True) == expected
    assert relay_by_pieces(pieces, policy) == expected


def test_the_raw_paddings_reach_the_padded_template() -> None:
    """The strategy's plain paddings are taken by the fast path (so the test above
    compares it, not the general path with itself), its escaped ones are not."""
    frames = [with_padding(event, b"k3Zr9") for event in long_stream(annotate=False)]
    policy = POLICIES[0]
    taken: list[bool] = []
    for padding in (b"ZGF", b"\xc3\xa9", b"", b"\\u00e9", b"\\/", b"\xff"):
        event = with_padding(long_stream(["abc"], annotate=False)[2], padding)
        normalizer = ChatStreamNormalizer(policy)
        for frame in frames[:3]:
            normalizer.feed(frame)
        steady = normalizer.steady_relay()
        assert steady is not None
        taken.append(steady(event) is not None)
    assert taken == [True, True, True, False, False, False]


def _held(template: object) -> int:
    """The bytes a template keeps: itself and the bytes objects in its slots."""
    slots = [name for cls in type(template).__mro__ for name in getattr(cls, "__slots__", ())]
    values = [getattr(template, name) for name in slots]
    return sys.getsizeof(template) + sum(
        sys.getsizeof(value) for value in values if type(value) is bytes)


def test_a_padded_template_keeps_only_its_padded_ends_beyond_a_plain_one() -> None:
    """Per gpt-5 stream: the plain template's bytes for the same frames, plus the head,
    the tail and the three ends around the padding `relay()` and `relayed()` compare and
    write; not the plain template's own `relayed()` and `relay()` ends it overrides."""
    templates = []
    for obfuscation in (False, True):
        normalizer = ChatStreamNormalizer(POLICIES[0])
        for frame in gpt5_stream(include_obfuscation=obfuscation)[:4]:
            normalizer.feed(frame)
        templates.append(normalizer._template)
    plain, padded = templates
    assert type(plain) is SteadyFrameTemplate and type(padded) is PaddedFrameTemplate
    own = sum(len(getattr(padded, name)) for name in PaddedFrameTemplate.__slots__
              if type(getattr(padded, name)) is bytes)
    assert _held(padded) <= _held(plain) + own
