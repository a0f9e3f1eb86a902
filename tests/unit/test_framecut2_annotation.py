"""The async filter's annotation frame on the pushed HTTP/2 relay's fast paths (branch
framecut2) against the general path:

- `AnnotationFrameTemplate.drop` (the offsets parsed between the event's own braces, in
  place) against the rule `drop()` had before (the offsets copied between new braces,
  `splitlines` for line breaks), and against what the general path does with the frame;
- `StreamPush._relay_annotated` (a steady content event and the annotation after it in
  one DATA frame: the first written framed, the second dropped, in one step) against the
  general path's bytes, on recorded sequences and Hypothesis-varied ones (texts with
  escapes and past ASCII, other filter results, other offsets)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.streampush import StreamPush
from azure_openai_proxy.normalize.annotation import AnnotationFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_h2cut_relay import _general, _pushed_over_h2
from tests.unit.test_stream_normalizer import (
    ASYNC_FILTER,
    async_annotation,
    delta,
    finish_frame,
    prompt_frame,
    role_frame,
    usage_frame,
)
from tests.unit.test_stream_steady import DONE, POLICIES

_INNER = b'"check_offset":0,"start_offset":0,"end_offset":22'
_LEARNED = async_annotation(0, 0, 22)


def _template() -> AnnotationFrameTemplate:
    data = _LEARNED[6:-2]
    template = AnnotationFrameTemplate.learn(data, orjson.loads(data))
    assert template is not None
    return template


def _old_rule(template: AnnotationFrameTemplate, event: bytes) -> bool:
    """`drop()`'s test before this branch, as it was written (not counted)."""
    start = len(b'data: {"choices":[{"content_filter_offsets":{')
    end = len(event) - len(_LEARNED[_LEARNED.index(_INNER) + len(_INNER):])
    if end < start or event[:start] != _LEARNED[:start] or event[end:] != _LEARNED[
            _LEARNED.index(_INNER) + len(_INNER):]:
        return False
    middle = event[start:end]
    if middle and len(middle.splitlines()[0]) != end - start:
        return False
    try:
        orjson.loads(b"{" + middle + b"}")
    except orjson.JSONDecodeError:
        return False
    return True


def _dropped_by_the_general_path(event: bytes) -> bool:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"), fast=False)
    for frame in (prompt_frame(), role_frame(), delta("a")):
        normalizer.feed(frame)
    return normalizer.feed(event) == b"" and normalizer.finish_reasons == {}


_JSON_VALUES = st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.booleans(), st.none())
# Offsets' members: orjson's, JSON spelled otherwise (spaces, line breaks, escapes), and
# bytes that are no JSON members at all (braces and quotes reaching past the object).
_MIDDLES = st.one_of(
    st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=4).map(
        lambda d: orjson.dumps(d)[1:-1]),
    st.dictionaries(st.sampled_from(["check_offset", "start_offset", "end_offset", "é\"\\"]),
                    _JSON_VALUES, max_size=3).map(
        lambda d: orjson.dumps(d, option=orjson.OPT_INDENT_2)[1:-1]),
    st.lists(st.sampled_from([b'"a"', b":", b",", b"1", b"-0", b"01", b" ", b"\n", b"\r",
                              b"\t", b"{", b"}", b"[", b"]", b'"', b"\\", b"\xc3\xa9", b"\xff",
                              b'"check_offset":7', b"1e3", b"null",
                              b"123456789012345678901234567890"]), max_size=10).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(middle=_MIDDLES, before=st.sampled_from([b"", delta("x"), b"data: [DONE]\n\n"]))
def test_drop_is_the_old_drop_rule_wherever_the_event_starts(middle: bytes, before: bytes) -> None:
    template = _template()
    event = _LEARNED.replace(_INNER, middle)
    expected = _old_rule(template, event)
    assert template.drop(before + event, len(before)) is expected
    assert template.drop(event) is expected
    assert template.dropped == 2 * int(expected)
    if expected:  # and the general path drops it too
        assert _dropped_by_the_general_path(event)


def test_drop_refuses_what_the_general_path_would_not_drop() -> None:
    template = _template()
    for event in (_LEARNED[:-1], _LEARNED + b"\n", _LEARNED.replace(b'"safe"', b'"low"', 1),
                  _LEARNED.replace(_INNER, b'"a":1}},"x":{"b":2'), delta("x"), DONE,
                  _LEARNED.replace(_INNER, b'"a":1,\n"b":2'), _LEARNED.replace(_INNER, b'"a":1\r')):
        assert not template.drop(event)
        assert not template.drop(delta("y") + event, len(delta("y")))
    assert template.drop(_LEARNED.replace(_INNER, b""))  # empty offsets, as `matches()`


def _paired(frames: list[bytes], joined: list[bool] | None = None) -> list[bytes]:
    """Each content frame with the annotation after it in one DATA frame, as
    `bench.paced` sends them; the others alone, or (`joined`, cycled) with the next."""
    pieces, n = [], 0
    while n < len(frames):
        two = n + 1 < len(frames) and (b"content_filter_offsets" in frames[n + 1] or bool(
            joined and joined[n % len(joined)]))
        pieces.append(b"".join(frames[n:n + 2]) if two else frames[n])
        n += 2 if two else 1
    return pieces


def _stream(words: list[str], annotations: list[bytes]) -> list[bytes]:
    out = [prompt_frame(), role_frame()]
    for n, word in enumerate(words):
        out.append(delta(word))
        if annotations and n % 2 == 1:
            out.append(annotations[n % len(annotations)])
    return [*out, finish_frame("stop"), usage_frame(), DONE]


_ANNOTATIONS = st.one_of(
    st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(0, 1 << 40)).map(
        lambda t: async_annotation(*t)),
    _MIDDLES.map(lambda middle: _LEARNED.replace(_INNER, middle)),
    st.sampled_from([b'"low"', b'"medium"', b'"safe","x":1', b'"high"']).map(
        lambda severity: async_annotation(1, 2, 3).replace(b'"safe"', severity, 1)),
    st.just(async_annotation(5, 5, 9).replace(b'"filtered":false,"severity":"safe"',
                                              b'"filtered":true,"severity":"high"', 1)),
)


@settings(max_examples=120, deadline=None)
@given(words=st.lists(st.text(max_size=10), min_size=2, max_size=14),
       annotations=st.lists(_ANNOTATIONS, max_size=4), policy=st.sampled_from(POLICIES),
       joined=st.lists(st.booleans(), max_size=5))
def test_content_and_annotation_in_one_data_frame_give_the_general_paths_bytes(
        words: list[str], annotations: list[bytes], policy: StreamPolicy,
        joined: list[bool]) -> None:
    frames = _stream(words, annotations)
    expected, usage = _general(frames, policy)
    got, record = asyncio.run(_pushed_over_h2(_paired(frames, joined), policy))
    assert got == expected
    assert record.usage == (usage or record.usage)
    assert record.error is None


@pytest.mark.parametrize("policy", POLICIES)
def test_the_recorded_async_filter_sequence_paired_gives_the_general_paths_bytes(
        policy: StreamPolicy) -> None:
    pieces = _paired(ASYNC_FILTER)
    assert any(piece.count(b"data: ") == 2 for piece in pieces)
    assert asyncio.run(_pushed_over_h2(pieces, policy))[0] == _general(ASYNC_FILTER, policy)[0]


def test_a_steady_content_frame_with_its_annotation_is_not_cut_into_events(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Once steady (template and annotation learned), such a DATA frame is relayed in one
    # step: `_feed_events` (the cut, event by event, then `flush`) is not called.
    cuts: list[int] = []
    original = StreamPush._feed_events

    def counted(self: StreamPush, data: bytes, cut: int) -> None:
        cuts.append(cut)
        original(self, data, cut)

    monkeypatch.setattr(StreamPush, "_feed_events", counted)
    frames = _stream([f" word{n}" for n in range(16)], [async_annotation(4, 4, 8)])
    pieces = _paired(frames)
    assert sum(piece.count(b"data: ") == 2 for piece in pieces) == 8
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    got, record = asyncio.run(_pushed_over_h2(pieces, policy))
    assert got == _general(frames, policy)[0]
    # The first pair comes before the annotation template is learned (the general path
    # learns it from that pair's annotation): it alone is cut.
    assert len(cuts) == 1
    assert record.usage is not None
