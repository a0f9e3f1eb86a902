from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.sse import SseDecoder, SseEvent, parse_event


def decode(*chunks: bytes) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.flush()


def test_one_event_keeps_its_exact_bytes() -> None:
    [event] = decode(b'data: {"a":1}\n\n')
    assert event == SseEvent(raw=b'data: {"a":1}\n\n', data=b'{"a":1}')


def test_feed_returns_complete_events_only() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: one\n\ndata: tw") == [SseEvent(b"data: one\n\n", b"one")]
    assert decoder.feed(b"o\n") == []
    assert decoder.feed(b"\n") == [SseEvent(b"data: two\n\n", b"two")]
    assert decoder.flush() == []


def test_crlf_and_cr_line_endings() -> None:
    events = decode(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")
    assert [(e.raw, e.data) for e in events] == [
        (b"data: a\r\n\r\n", b"a"),
        (b"data: b\r\r", b"b"),
        (b"data: c\n\n", b"c"),
    ]


def test_trailing_cr_is_held_until_the_next_byte_says_whether_lf_follows() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\n\r") == []
    assert decoder.feed(b"\n") == [SseEvent(b"data: a\r\n\r\n", b"a")]
    assert decoder.feed(b"data: b\r\r") == []
    assert decoder.feed(b"d") == [SseEvent(b"data: b\r\r", b"b")]
    assert decoder.flush() == [SseEvent(b"d", None)]


def test_held_cr_blank_line_comes_out_on_flush() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\r") == []
    assert decoder.flush() == [SseEvent(b"data: a\r\r", b"a")]


def test_multiple_data_lines_join_with_newline() -> None:
    [event] = decode(b"data: a\ndata:b\ndata:  c\n\n")
    assert event.data == b"a\nb\n c"


def test_fields_event_id_retry() -> None:
    [event] = decode(b"event: error\nid: 7\nretry: 1500\ndata: x\n\n")
    assert (event.event, event.id, event.retry, event.data) == ("error", "7", 1500, b"x")


def test_bad_retry_and_nul_id_are_ignored() -> None:
    [event] = decode(b"retry: soon\nid: a\0b\ndata: x\n\n")
    assert (event.retry, event.id) == (None, None)


def test_comment_only_block_is_an_event_without_data() -> None:
    assert decode(b": keep-alive\n\n") == [SseEvent(b": keep-alive\n\n", None)]


def test_comment_inside_event_is_skipped() -> None:
    [event] = decode(b": note\ndata: x\n\n")
    assert event.data == b"x"


def test_line_without_colon_is_a_field_with_empty_value() -> None:
    [event] = decode(b"data\n\n")
    assert event.data == b""


def test_stray_blank_lines_are_blocks_without_data() -> None:
    events = decode(b"data: a\n\n\n\ndata: b\n\n")
    assert [e.raw for e in events] == [b"data: a\n\n", b"\n", b"\n", b"data: b\n\n"]
    assert [e.data for e in events] == [b"a", None, None, b"b"]


def test_flush_returns_unterminated_trailing_event_and_resets() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == [SseEvent(b"data: [DONE]", b"[DONE]")]
    assert decoder.flush() == []
    assert decoder.feed(b"data: x\n\n") == [SseEvent(b"data: x\n\n", b"x")]


def test_empty_feed_is_a_no_op() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"") == []
    assert decoder.flush() == []


def test_parse_event_splits_on_all_three_line_endings() -> None:
    assert parse_event(b"data: a\rdata: b\r\ndata: c\n\n").data == b"a\nb\nc"


_BOM = b"\xef\xbb\xbf"  # dropped at a stream's very start (test_sse_reference.py)
_line = st.one_of(
    st.sampled_from([b"data: x", b"data:{}", b": c", b"event: e", b"id: 1", b"", b"retry: 3"]),
    st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
_stream = st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=30).map(
    lambda parts: b"".join(line + end for line, end in parts)
)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(_stream, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_yields_the_same_events(data: bytes, cuts: list[int]) -> None:
    assert decode(*_chunked(data, cuts)) == decode(data)


@given(_stream, st.lists(st.integers(min_value=0), max_size=20))
def test_raw_bytes_of_all_events_concatenate_to_the_input(data: bytes, cuts: list[int]) -> None:
    assert b"".join(e.raw for e in decode(*_chunked(data, cuts))) == data.removeprefix(_BOM)


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_never_raise_and_lose_nothing(data: bytes, cuts: list[int]) -> None:
    events = decode(*_chunked(data, cuts))
    assert b"".join(e.raw for e in events) == data.removeprefix(_BOM)
    assert events == decode(data)


@given(_stream)
def test_byte_at_a_time_matches_whole(data: bytes) -> None:
    assert decode(*(data[i : i + 1] for i in range(len(data)))) == decode(data)


def test_agrees_with_the_openai_sdk_decoder_on_data() -> None:
    from openai._streaming import SSEDecoder

    stream = b'data: {"a":1}\r\n\r\n: ping\n\nevent: e\ndata: 2\ndata: 3\n\ndata: [DONE]\n\n'
    sdk = [sse.data for sse in SSEDecoder().iter_bytes(iter([stream]))]
    ours = [e.data.decode() for e in decode(stream) if e.data is not None]
    assert ours == sdk


def test_chunks_without_a_line_break_are_queued_then_joined() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: {") == []
    assert decoder.feed(b'"a":') == []
    assert decoder.feed(b"1}") == []
    assert decoder.feed(b"\n\n") == [SseEvent(b'data: {"a":1}\n\n', b'{"a":1}')]


def test_queued_chunk_after_a_held_cr_releases_the_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\r") == []
    assert decoder.feed(b"x") == [SseEvent(b"data: a\r\r", b"a")]
    assert decoder.flush() == [SseEvent(b"x", None)]


def test_events_are_immutable() -> None:
    import pytest

    event = SseEvent(b"data: x\n\n", b"x")
    with pytest.raises(AttributeError):
        event.data = b"y"  # type: ignore[misc]


@given(_stream, st.lists(st.integers(min_value=0), max_size=6), st.binary(max_size=40))
def test_single_is_feed_for_a_lone_plain_event_and_changes_nothing(
        data: bytes, cuts: list[int], tail: bytes) -> None:
    pieces = _chunked(data, cuts)
    before, chunk = pieces[:-1], pieces[-1] + tail
    for candidate in (chunk, b"data: " + tail + b"\n\n"):
        decoder, twin = SseDecoder(), SseDecoder()
        for piece in before:
            decoder.feed(piece)
            twin.feed(piece)
        got = decoder.single(candidate)
        expected = twin.feed(candidate)
        assert decoder.feed(candidate) == expected  # single() changed nothing
        if got is not None:
            assert [(e.data, e.raw) for e in expected] == [(got, candidate)]
        assert decoder.flush() == twin.flush()


def test_single_takes_only_a_whole_plain_event_with_nothing_buffered() -> None:
    decoder = SseDecoder()
    # The stream's first bytes only without a byte order mark (`feed()` drops one).
    assert decoder.single(b'\xef\xbb\xbfdata: {"a":1}\n\n') is None
    assert decoder.single(b'data: first\n\n') == b"first"
    assert decoder.single(b'data: {"a":1}\n\n') == b'{"a":1}'
    for chunk in (b'data: {"a":1}\n', b'data: {"a":1}\r\n\r\n', b"data: a\n\ndata: b\n\n",
                  b"event: x\ndata: a\n\n", b"data:a\n\n", b""):
        assert decoder.single(chunk) is None
    decoder.feed(b"data: par")
    assert decoder.single(b'data: {"a":1}\n\n') is None
