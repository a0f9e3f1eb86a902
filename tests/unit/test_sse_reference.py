"""`SseDecoder` against the WHATWG event-stream algorithm written plainly, byte by byte,
for events of many lines cut into many small chunks; and its cost for such an event,
counted in bytes allocated (tracemalloc), not timed."""

from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.errors import UpstreamEventTooLarge
from azure_openai_proxy.sse import SseDecoder, SseEvent, parse_event

_CR, _LF = 13, 10
_BOM = b"\xef\xbb\xbf"


def _reference(stream: bytes, *, start: bool = True) -> list[SseEvent]:
    """The whole stream's events: a block of lines ended by a blank line is an event, and
    what is left at the end is one more (what `flush()` returns); a line ends at "\\r\\n",
    "\\r" or "\\n". At the stream's `start`, a UTF-8 byte order mark is dropped (WHATWG
    decodes the stream with UTF-8 decode, which drops one there; one anywhere else is
    kept: U+FEFF, a character of the line)."""
    if start and stream[:3] == _BOM:
        stream = stream[3:]
    events: list[SseEvent] = []
    lines: list[bytes] = []
    start = i = 0
    while i < len(stream):
        j = i
        while j < len(stream) and stream[j] not in (_CR, _LF):
            j += 1
        line = stream[i:j]
        if j == len(stream):  # the last line, unterminated
            lines.append(line)
            break
        i = j + (2 if stream[j : j + 2] == b"\r\n" else 1)
        if line:
            lines.append(line)
        else:
            events.append(_event(stream[start:i], lines))
            start, lines = i, []
    if start < len(stream):
        events.append(_event(stream[start:], lines))
    return events


def _event(raw: bytes, lines: list[bytes]) -> SseEvent:
    """WHATWG's field rules: ":" starts a comment, one space after the colon is dropped,
    `data` lines joined by "\\n", the last `event` and `id` (no NUL) win, `retry` only if
    all ASCII digits. `data` is None without a data line (the decoder keeps such blocks)."""
    data: list[bytes] = []
    event = id_ = None
    retry = None
    for line in lines:
        if line.startswith(b":"):
            continue
        if b":" in line:
            name, value = line.split(b":", 1)
            if value.startswith(b" "):
                value = value[1:]
        else:
            name, value = line, b""
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            id_ = value.decode("utf-8", "replace")
        elif name == b"retry" and value and all(0x30 <= c <= 0x39 for c in value):
            retry = int(value)
    return SseEvent(raw, b"\n".join(data) if data else None, event, id_, retry)


def _fed(chunks: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


_value = st.binary(max_size=10).filter(lambda b: b"\r" not in b and b"\n" not in b)
_line = st.one_of(
    st.tuples(st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"x"]),
              st.sampled_from([b": ", b":", b"", b":  "]), _value).map(b"".join),
    st.sampled_from([b"data: {}", b": keep-alive", b"retry: 15", b"id: a\0b", b"data",
                     _BOM + b"data: kept"]),
    _value,
)
_end = st.sampled_from([b"\n", b"\r\n", b"\r"])
# Events of up to 40 lines, so most of a stream is in events of several lines.
_block = st.tuples(st.lists(st.tuples(_line, _end), max_size=40), _end).map(
    lambda b: b"".join(line + end for line, end in b[0]) + b[1])
# A stream may start with a byte order mark (or what could begin one).
_start = st.sampled_from([b"", b"", _BOM, _BOM[:1], _BOM[:2]])
_stream = st.tuples(_start, st.lists(_block, max_size=6), st.binary(max_size=20)).map(
    lambda s: s[0] + b"".join(s[1]) + s[2])


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` in chunks of the given sizes, cycled (most of them small)."""
    chunks, at, k = [], 0, 0
    while at < len(data):
        size = sizes[k % len(sizes)]
        chunks.append(data[at : at + size])
        at, k = at + size, k + 1
    return chunks


@settings(max_examples=300)
@given(_stream, st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=12))
def test_many_small_chunks_of_multiline_events_decode_as_the_reference(
        data: bytes, sizes: list[int]) -> None:
    assert _fed(_cut(data, sizes)) == _reference(data)


@given(_stream)
def test_a_line_a_chunk_decodes_as_the_reference(data: bytes) -> None:
    lines = re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", data)
    assert b"".join(lines) == data
    assert _fed(lines) == _reference(data)


@given(st.tuples(_start, st.binary(max_size=300)).map(b"".join),
       st.lists(st.integers(min_value=1, max_value=5), min_size=1))
def test_arbitrary_bytes_in_small_chunks_decode_as_the_reference(
        data: bytes, sizes: list[int]) -> None:
    assert _fed(_cut(data, sizes)) == _reference(data)


@given(_stream, _stream, st.lists(st.integers(min_value=1, max_value=9), min_size=1))
def test_flush_leaves_nothing_of_an_unfinished_event(
        first: bytes, second: bytes, sizes: list[int]) -> None:
    decoder = SseDecoder()
    for index, data in enumerate((first, second)):  # the same decoder, flushed in between
        events = [event for chunk in _cut(data, sizes) for event in decoder.feed(chunk)]
        # (A byte order mark is the first stream's start's only: the decoder's first bytes.
        # By position, not `is`: equal short bytes may be one object.)
        assert events + decoder.flush() == _reference(data, start=index == 0)


def test_the_reference_reads_what_the_tests_expect() -> None:
    """The reference itself, on the cases test_sse.py states by hand."""
    assert _reference(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        SseEvent(b"data: a\r\n\r\n", b"a"), SseEvent(b"data: b\r\r", b"b"),
        SseEvent(b"data: c\n\n", b"c")]
    assert _reference(b"event: e\nid: 7\nretry: 1500\ndata: x\ndata:y\n\n: c\n\nd") == [
        SseEvent(b"event: e\nid: 7\nretry: 1500\ndata: x\ndata:y\n\n", b"x\ny", "e", "7", 1500),
        SseEvent(b": c\n\n"), SseEvent(b"d")]
    assert _reference(_BOM + b"data: a\n\n" + _BOM + b"data: b\n\n") == [
        SseEvent(b"data: a\n\n", b"a"), SseEvent(_BOM + b"data: b\n\n")]


@pytest.mark.parametrize("cut", range(12))
def test_a_byte_order_mark_at_the_streams_very_start_is_dropped(cut: int) -> None:
    """Fed whole, or cut anywhere (inside the mark too): only the first one is dropped."""
    stream = _BOM + b"data: x\n\n" + _BOM + b"data: y\n\n"
    decoder = SseDecoder()
    events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    assert events == [SseEvent(b"data: x\n\n", b"x"), SseEvent(_BOM + b"data: y\n\n")]
    assert decoder.idle() and decoder.flush() == []


_LINES = 4_000  # 100 bytes each: a 400 kB event, fed a line (or 7 bytes) a read


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [None, 7])
def test_a_large_multiline_event_in_small_reads_allocates_a_few_times_its_size(
        end: bytes, size: int | None) -> None:
    """The bytes each `feed()` allocates beyond what it started with (its tracemalloc peak),
    summed over the reads of one event of 4,000 lines: 4.7 times the event a line a read
    (24 in 7-byte reads) when the unfinished event is kept in pieces; ~2,000 times when it
    is copied whole at every read (the event so far each time: quadratic in its size)."""
    line = b"data: " + b"x" * (100 - 6 - len(end)) + end
    event = line * _LINES + end
    chunks = [line] * _LINES + [end] if size is None else _cut(event, [size])
    decoder = SseDecoder()
    got: list[SseEvent] = []
    allocated = 0
    tracemalloc.start()
    try:
        for chunk in chunks:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            got += decoder.feed(chunk)
            allocated += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    got += decoder.flush()
    assert [e.raw for e in got] == [event]
    assert got[0].data == b"\n".join([line[6 : -len(end)]] * _LINES)
    # Each read's own objects (the list it returns, ...) are ~170 bytes more a read.
    assert allocated < 8 * len(event) + 256 * len(chunks), f"{allocated / len(event):.1f} x"


@given(_stream, st.lists(st.integers(min_value=1, max_value=9), min_size=1),
       st.integers(min_value=1, max_value=400))
def test_an_event_held_past_the_limit_ends_the_decoding_with_the_error(
        data: bytes, sizes: list[int], limit: int) -> None:
    """Events that all fit come out as the reference's; otherwise, if the error comes, the
    events before it are the reference's first ones, all before an event past the limit,
    and the decoder holds nothing after it."""
    expected = _reference(data)
    decoder = SseDecoder(limit)
    events: list[SseEvent] = []
    try:
        for chunk in _cut(data, sizes):
            events += decoder.feed(chunk)
        events += decoder.flush()  # never raises: drops an event held past the limit
    except UpstreamEventTooLarge as exc:
        assert f"limit of {limit} bytes" in exc.message
        assert events == expected[: len(events)]
        assert any(len(e.raw) > limit for e in expected[len(events):])
        assert decoder.idle() and decoder.flush() == []
        assert _fed_after(decoder, b"data: x\r\n\r\n") == [SseEvent(b"data: x\r\n\r\n", b"x")]
    else:
        assert events == expected[: len(events)]
        assert events == expected or len(expected[-1].raw) > limit


def _fed_after(decoder: SseDecoder, data: bytes) -> list[SseEvent]:
    return decoder.feed(data) + decoder.flush()


def test_an_endless_line_is_refused_one_byte_past_the_limit() -> None:
    """Chunks without a line break are only queued: counted all the same."""
    decoder = SseDecoder(1000)
    decoder.feed(b"data: ")
    for _ in range(99):
        assert decoder.feed(b"x" * 10) == []  # 996 bytes held
    assert decoder.feed(b"x" * 4) == []  # 1,000: the limit, held
    with pytest.raises(UpstreamEventTooLarge):
        decoder.feed(b"x")
    assert decoder.idle()


def test_events_a_read_completes_come_out_before_the_error() -> None:
    """A read that completes an event and leaves the next one past the limit returns the
    first; the error comes with the next read, and `flush()` (called while a stream ends,
    from error handlers too) drops the event rather than raise."""
    for last in (b"more\n\n", b"x", None):
        decoder = SseDecoder(20)
        assert decoder.feed(b"data: a\n\ndata: " + b"y" * 30 + b"\n") == [
            SseEvent(b"data: a\n\n", b"a")]
        if last is None:
            assert decoder.flush() == []
        else:
            with pytest.raises(UpstreamEventTooLarge):
                decoder.feed(last)
        assert decoder.idle() and decoder.flush() == []


def test_an_event_within_the_limit_cut_anywhere_passes() -> None:
    event = b"event: e\r\ndata: " + b"z" * 80 + b"\r\n\r\n"
    for cut in range(1, len(event)):
        decoder = SseDecoder(len(event))
        assert decoder.feed(event[:cut]) + decoder.feed(event[cut:] + event) == [
            parse_event(event)] * 2
