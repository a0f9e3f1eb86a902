"""The steady fast paths (`steady.py`: `relay()`'s unparsed plain text, its parsed
`match()`, `drop()` of annotation frames) against the normalizer's general path on
frames that are almost Azure's: a recorded stream with bytes put in, taken out or
written over inside its frames, from what could make a frame the fast path takes read
otherwise (escapes, quotes, a second choice, other delta keys, line endings, SSE lines,
bytes that are not UTF-8, `usage` on a content frame). Whatever the frames became, the
client's events and everything counted (usage, finish reasons, frames in and out, the
characters of text the ledger estimates from) are the general path's; where the model
is not renamed, byte for byte."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.estimate import estimated_usage
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_relay_push import PROMPT, Exchange, client_body, cut, wire
from tests.unit.test_stream_normalizer import AZURE_MODEL, events
from tests.unit.test_stream_steady import POLICIES, long_stream, relay, relay_by_pieces

# What a frame's bytes may gain, where: a content delta's text (JSON escapes, what a
# JSON string holds only escaped, UTF-8 valid or not), the choice's members from its
# delta on (other delta keys, a finish, another index, logprobs, a second choice or
# delta, `usage`, JSON whitespace and line breaks) put at a member's boundary, an
# annotation's offsets, or anything anywhere (SSE's own syntax too).
_TEXT = [b'"', b"\\", b'\\"', b"\\\\", b"\\/", b"\\u2028", b"\xe2\x80\xa8", b"\\u0000",
         b"\x00", b"\x1f", b"\\ud83d\\ude00", b"\\ud83d", b"\xf0\x9f\x98\x80", b"\xc3\xa9",
         b"\xff", b"\xc3", b"\xed\xa0\xbd", b"\x7f", b"\t", b"\r", b"\n", b'"},{"', b"x"]
_MEMBERS = [b',"refusal":"r"', b',"tool_calls":[{"function":{"arguments":"{}"}}]',
            b',"function_call":{"name":"f"}', b',"audio":{}', b',"reasoning_content":"t"',
            b',"content":"c"', b',"finish_reason":"stop"', b',"finish_reason":"content_filter"',
            b',"index":1', b',"logprobs":{"content":[]}', b',"content_filter_results":{}',
            b',"usage":{"total_tokens":3}', b'},{"delta":{"content":"z"},"index":1',
            b',"delta":{"content":"z"}', b" ", b"\n", b"\r", b"\r\n", b"}", b","]
_OFFSETS = [b"\n", b"\r", b"}", b"{", b'"', b',"a":1', b',"filtered":true', b"1"]
_ANY = [*_TEXT, *_MEMBERS, b"{", b"[", b"]", b":", b"null", b"true", b"\n\n", b"data: ",
        b"data:", b": ping\n\n", b"event: x\n", b'],"usage":{"total_tokens":3},"x":[']
WORDS = ["a", "b c", "\u00e9", "d", "e", "f", "g", "h"]
# Each region: its opening and closing bytes in a frame, the pieces put there, and
# whether they go at a member's boundary (before a `,` or `}`) rather than anywhere.
_REGIONS: dict[str, tuple[bytes, bytes, list[bytes], bool]] = {
    "text": (b'{"content":"', b'"}', _TEXT, False),
    "choice": (b'"delta":', b'],"created":', _MEMBERS, True),
    "offsets": (b'"content_filter_offsets":{', b'},"content_filter_results":', _OFFSETS, False),
    "frame": (b"", b"", _ANY, False),
}
_EDIT = st.tuples(st.sampled_from(["insert", "insert", "delete", "overwrite"]),
                  st.sampled_from(["text", "text", "choice", "choice", "offsets", "frame"]),
                  st.floats(0, 1, exclude_max=True),
                  st.integers(0, 1 << 16))


def _mutated(frame: bytes, edits: list[tuple[str, str, float, int]]) -> bytes:
    data = bytearray(frame)
    for how, region, where, which in edits:
        opening, closing, pieces, at_boundary = _REGIONS[region]
        piece = pieces[which % len(pieces)]
        start = data.find(opening) + len(opening) if opening else 0
        end = data.find(closing, start) if closing else len(data)
        if start < len(opening) or end < 0:
            start, end = 0, len(data)
        spots = ([i for i in range(start, min(end + 1, len(data))) if data[i] in b",}"]
                 if at_boundary else []) or list(range(start, end + 1))
        at = spots[int(where * len(spots))]
        if how == "insert":
            data[at:at] = piece
        elif how == "delete":
            del data[at:at + len(piece)]
        else:
            data[at:at + len(piece)] = piece
    return bytes(data)


@st.composite
def mutated_streams(draw: st.DrawFn) -> list[bytes]:
    """A long recorded stream (its first content frame learned from, intact) with some
    later frames changed."""
    frames = long_stream(WORDS)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(3, len(frames) - 2))  # not the first delta nor [DONE]
        frames[at] = _mutated(frames[at], draw(st.lists(_EDIT, min_size=1, max_size=3)))
    return frames


def _same(got: tuple[bytes, object], want: tuple[bytes, object], policy: StreamPolicy) -> None:
    assert got[1] == want[1]
    assert events(got[0]) == events(want[0])
    if policy.client_model in (None, AZURE_MODEL):  # nothing re-serialised for the model
        assert got[0] == want[0]


@settings(max_examples=500, deadline=None)
@given(frames=mutated_streams(), policy=st.sampled_from(POLICIES), data=st.data())
def test_almost_azure_frames_come_out_as_the_general_paths(
        frames: list[bytes], policy: StreamPolicy, data: st.DataObject) -> None:
    want = relay(frames, policy, fast=False)
    _same(relay(frames, policy, fast=True), want, policy)
    _same(relay_by_pieces(frames, policy), want, policy)
    whole = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    _same(relay_by_pieces(pieces, policy), want, policy)


@settings(max_examples=60, deadline=None)
@given(frames=mutated_streams(), policy=st.sampled_from(POLICIES),
       points=st.lists(st.integers(1, 6000), max_size=12), per_chunk=st.integers(1, 3))
def test_almost_azure_frames_pushed_come_out_as_the_general_paths(
        frames: list[bytes], policy: StreamPolicy, points: list[int], per_chunk: int) -> None:
    # Through the pushed relay itself (llhttp's pieces into `_StreamPush`), cut into reads.
    chunked = [b"".join(frames[i:i + per_chunk]) for i in range(0, len(frames), per_chunk)]
    data = wire(chunked)
    reads = cut(data, [p for p in points if p < len(data)])
    general = ChatStreamNormalizer(policy, fast=False)
    want = b"".join(general.feed(frame) for frame in frames) + general.finish()

    async def compare() -> None:
        exchange = Exchange(pushed=True, policy=policy)
        await exchange.run(reads)
        assert events(client_body(exchange.channel.writes)) == events(want)
        # Azure's usage, or (none came) the estimate from the characters relayed.
        assert exchange.record.usage == (
            general.usage or estimated_usage(PROMPT, general.content_chars))

    asyncio.run(compare())
