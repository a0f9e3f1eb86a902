"""The pushed HTTP/2 relay's steady frame in fewer steps (issue 15, session 30): the
template's `relay` gives the client's chunk framed in one build (`relay(event, lines)`),
and the sink flushes from `feed` so the connection's DATA loop makes no `flush` call a
frame (`feed_flushes`). The framed relay is held against the normalizer's general path
(`fast=False`) on the recorded Azure sequences, plain and padded, the chunk's size line
from the table and past it; the sink's flush against the general path through a real
`_H2Connection` (tests/unit/test_framesink_direct.py holds the bytes write by write)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.relay import _StreamPush
from azure_openai_proxy.http.request import CHUNK_LINES, chunk
from azure_openai_proxy.normalize.steady import SteadyFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.frames import DATA, END_HEADERS, END_STREAM, HEADERS, SETTINGS
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_framesink_direct import _general_by_piece, _Run
from tests.unit.test_h2cut_relay import _Wire
from tests.unit.test_relay_push import client_body
from tests.unit.test_stream_padded import RAW_PADDINGS, with_padding
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, long_stream, relay, relay_by_pieces

# The words of a stream whose deltas take each of the framed relay's ways: plain text
# (ASCII or not), and escaped text (the parsed way, `_relay_parsed`).
WORDS = [" The", " capital", " of", " France", ' "quoted"', " é ü 中文 🙂", " \\ slash",
         " is", " Paris", "\n\nnewline", "."]
STREAMS = [*SEQUENCES, long_stream(WORDS * 3),
           [with_padding(event, padding) for event, padding in zip(
               long_stream(WORDS * 3), RAW_PADDINGS * 20, strict=False)]]


def _unframed(framed: bytes, lines: tuple[bytes, ...]) -> bytes:
    """The event inside one chunk, its size line and CRLF checked."""
    head_end = framed.index(b"\r\n") + 2
    event = framed[head_end:-2]
    assert framed[-2:] == b"\r\n"
    assert int(framed[:head_end - 2], 16) == len(event) > 0
    if len(event) < len(lines):
        assert framed[:head_end] == lines[len(event)]
    return event


def framed_by_pieces(pieces: list[bytes], policy: StreamPolicy,
                     lines: tuple[bytes, ...]) -> tuple[tuple[bytes, Any], int]:
    """As the pushed relay feeds the normalizer over HTTP/2: each piece to the steady
    shortcut's template's `relay(piece, lines)` first (the chunk unframed and checked),
    then `annotation_drop()`, while they are offered, else to `feed()`; and how many
    pieces the framed relay took."""
    normalizer = ChatStreamNormalizer(policy)
    out: list[bytes] = []
    framed = drop = None
    taken = 0
    for piece in pieces:
        if framed is not None:
            relayed = framed(piece, lines)
            if relayed is not None:
                out.append(_unframed(relayed, lines))
                taken += 1
                continue
            if drop is not None and drop(piece):
                continue
        out.append(normalizer.feed(piece))
        steady, drop = normalizer.shortcuts()
        template = getattr(steady, "__self__", None)
        framed = template.relay if isinstance(template, SteadyFrameTemplate) else None
    out.append(normalizer.finish())
    return (b"".join(out), (normalizer.usage, normalizer.finish_reasons, normalizer.frames_in,
                            normalizer.frames_out, normalizer.done,
                            normalizer.content_chars)), taken


@pytest.mark.parametrize("lines", [CHUNK_LINES, CHUNK_LINES[:64]])
def test_recorded_sequences_by_the_framed_relay_are_the_general_paths(
        lines: tuple[bytes, ...]) -> None:
    # `CHUNK_LINES[:64]`: every chunk's size line past the table, written as a number.
    taken = 0
    for frames in STREAMS:
        for policy in POLICIES:
            out, n = framed_by_pieces(frames, policy, lines)
            assert out == relay(frames, policy, fast=False), policy
            taken += n
    assert taken > 200  # the framed relay took the steady frames


def test_the_framed_relay_is_the_relay_chunked_and_counts_alike() -> None:
    for frames in STREAMS:
        normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
        other = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
        for event in frames:
            steady, _ = normalizer.shortcuts()
            twin, _ = other.shortcuts()
            template = getattr(steady, "__self__", None)
            if isinstance(template, SteadyFrameTemplate) and twin is not None:
                plain = twin(event)
                framed = template.relay(event, CHUNK_LINES)
                assert framed == (None if plain is None else chunk(plain))
                if plain is not None:
                    continue
            normalizer.feed(event)
            other.feed(event)
        assert normalizer.content_chars == other.content_chars
        assert normalizer.frames_out == other.frames_out


def _flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per `_StreamPush.flush` call."""
    calls: list[int] = []
    original = _StreamPush.flush

    def counted(self: _StreamPush) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(_StreamPush, "flush", counted)
    return calls


async def test_steady_data_frames_make_no_flush_call(monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = _flushes(monkeypatch)
    frames = long_stream([f" w{n}" for n in range(40)], annotate=False)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    run = _Run(policy)
    await run.started()
    for piece in frames[:6]:  # the prompt's filter, the role, the first content frames
        await run.data(piece)
    before, written = len(flushes), len(run.channel.writes)
    steady = frames[6:-3]
    for piece in steady:
        await run.data(piece)
    # Each one written from `feed`: nothing pending, so nothing to flush.
    assert len(flushes) == before
    assert len(run.channel.writes) - written == len(steady)  # one write each
    for piece in frames[-3:]:
        await run.data(piece, last=piece is frames[-1])
    await asyncio.wait_for(run.task, 5)
    assert client_body(run.channel.writes) == b"".join(_general_by_piece(frames, policy))


@pytest.mark.parametrize("sizes", [[1], [2, 1], [3]])
async def test_what_a_data_frame_yields_leaves_before_the_next(
        monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> None:
    # Nothing the connection relies on `flush` for may stay pending past `feed`: after
    # each DATA frame the client has had everything the general path gives up to it.
    frames = long_stream()
    for policy in POLICIES:
        pieces, at, n = [], 0, 0
        while at < len(frames):
            pieces.append(b"".join(frames[at:at + sizes[n % len(sizes)]]))
            at, n = at + sizes[n % len(sizes)], n + 1
        expected = _general_by_piece(pieces, policy)
        run = _Run(policy)
        await run.started()
        for n, piece in enumerate(pieces[:-1]):
            await run.data(piece)
            got = client_body([*run.channel.writes, b"0\r\n\r\n"])
            assert got == b"".join(expected[:n + 1]), (policy, n)
        await run.data(pieces[-1], last=True)
        await asyncio.wait_for(run.task, 5)


def test_texts_past_ascii_or_not_utf8_are_relayed_as_the_general_path_relays_them() -> None:
    # The plain text's one search (`_UNPLAIN_WIDE`) sends a text with a byte past ASCII
    # to its second check: plain and UTF-8 is relayed unparsed, else the general path's.
    words = [" a", " b", " é", " 中文", " x\\u00e9", " 🙂 \\\"q\\\""]
    frames = long_stream(words * 2, annotate=False)
    broken = [event.replace("é".encode(), b"\xc3") for event in frames]  # cut UTF-8
    broken = [event.replace("中".encode(), b"\xff\xfe") for event in broken]
    for stream in (frames, broken):
        for policy in POLICIES:
            expected = relay(stream, policy, fast=False)
            assert relay_by_pieces(stream, policy) == expected
            assert framed_by_pieces(stream, policy, CHUNK_LINES)[0] == expected
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for event in frames[:4]:
        normalizer.feed(event)
    steady, _ = normalizer.shortcuts()
    assert steady is not None
    assert steady(broken[4]) is None and steady(broken[5]) is None  # " é", " 中文" cut
    assert steady(frames[4]) is not None and steady(frames[5]) is not None


def _broken(event: bytes, at: int, byte: int) -> bytes:
    """`event` with one byte past ASCII put inside its delta's text (UTF-8 cut or not)."""
    text = event.find(b'"content":"')
    if text < 0:
        return event
    text += len(b'"content":"')
    stop = event.find(b'"', text)
    where = text + at % (stop - text + 1)
    return event[:where] + bytes([byte]) + event[where:]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=10), min_size=1, max_size=10), st.data())
def test_any_text_by_the_framed_relay_is_the_general_paths(words: list[str],
                                                          data: st.DataObject) -> None:
    # Any text (escaped, past ASCII) and, in some frames, a stray byte past ASCII that
    # may leave the text not UTF-8: the framed relay, plain and padded, and the unframed
    # shortcut give what the general path gives.
    frames = long_stream(words, annotate=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        padding = data.draw(st.sampled_from(RAW_PADDINGS))
        frames = [with_padding(event, padding) for event in frames]
    breaks = data.draw(st.lists(st.tuples(st.integers(0, len(frames) - 1), st.integers(0, 40),
                                          st.integers(0x80, 0xFF)), max_size=4))
    for index, at, byte in breaks:
        frames[index] = _broken(frames[index], at, byte)
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    assert relay_by_pieces(frames, policy) == expected
    lines = data.draw(st.sampled_from([CHUNK_LINES, CHUNK_LINES[:40]]))
    assert framed_by_pieces(frames, policy, lines)[0] == expected


class _Sink:
    """A pushed stream's sink that records its calls (`upstream.fast.BodySink`)."""

    def __init__(self, flushes: object) -> None:
        self.calls: list[str] = []
        if flushes is not None:
            self.feed_flushes = flushes

    def feed(self, data: bytes) -> None:
        self.calls.append("feed")

    def flush(self) -> None:
        self.calls.append("flush")

    def end(self) -> None:
        self.calls.append("end")

    def fail(self, error: Exception) -> None:
        self.calls.append("fail")


@pytest.mark.parametrize(("flushes", "skipped"), [(None, False), (False, False), (1, False),
                                                  (True, True)])
async def test_only_a_sink_that_says_it_flushes_from_feed_is_not_flushed(
        flushes: object, skipped: bool) -> None:
    # Any other sink (HTTP/1.1's own protocol, `BodySink`, has no `feed_flushes`) is
    # flushed after each DATA frame, the plain ones (the DATA loop's inline path) and the
    # rest (`_on_data`: the last frame, END_STREAM).
    loop = asyncio.get_running_loop()
    conn = _H2Connection(loop, "azure.test", 600.0)
    conn.connection_made(_Wire())  # type: ignore[arg-type]
    conn.data_received(frame(SETTINGS, 0, 0))
    stream = conn.open_stream(b"\x82", True)
    conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block((":status", "200"))))
    sink = _Sink(flushes)
    stream.push_to(sink)  # type: ignore[arg-type]
    conn.data_received(frame(DATA, 0, stream.sid, b"a") + frame(DATA, 0, stream.sid, b"b"))
    conn.data_received(frame(DATA, END_STREAM, stream.sid, b"c"))
    plain = ["feed", "feed"] if skipped else ["feed", "flush", "feed", "flush"]
    assert sink.calls == [*plain, "feed", "flush", "end"]


def test_a_padded_template_keeps_no_plain_chunk_end() -> None:
    # Its plain ends are not kept (`_out_tail`, `_text_out_end`: ~380 bytes a gpt-5
    # stream), nor the framed relay's chunk end built from them.
    frames = [with_padding(event, b"k3Zr9") for event in long_stream(WORDS, annotate=False)]
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for event in frames[:5]:
        normalizer.feed(event)
    steady, _ = normalizer.shortcuts()
    template = getattr(steady, "__self__", None)
    assert type(template).__name__ == "PaddedFrameTemplate"
    assert template._text_out_end == b"" and template._text_chunk_end == b""
