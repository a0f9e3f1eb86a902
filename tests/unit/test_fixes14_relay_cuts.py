"""The pushed relay over HTTP/2 with Azure's body cut anywhere into DATA frames: in the
middle of an event, in the middle of a line, between an event's two newlines, and (its
lines ended by CRLF, as SSE allows) between a CR and its LF. What the client gets must
be the bytes of the uncut stream (one DATA frame per Azure event) byte for byte: the
relay's steady shortcut and its cut at event ends (`_StreamPush._feed_events`) must
never take a piece of an event for a whole one. (tests/unit/test_h2cut_relay.py groups
whole events only.)"""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.normalize.stream import StreamPolicy
from tests.unit.test_h2cut_relay import _general, _pushed_over_h2
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, long_stream


def _crlf(frames: list[bytes]) -> list[bytes]:
    return [frame.replace(b"\n", b"\r\n") for frame in frames]


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({min(max(cut, 1), len(body) - 1) for cut in cuts})
    bounds = [0, *at, len(body)]
    return [body[a:b] for a, b in pairwise(bounds) if b > a]


def _check(frames: list[bytes], pieces: list[bytes], policy: StreamPolicy) -> None:
    assert b"".join(pieces) == b"".join(frames)
    uncut, uncut_record = asyncio.run(_pushed_over_h2(frames, policy))
    got, record = asyncio.run(_pushed_over_h2(pieces, policy))
    assert got == uncut
    assert record.usage == uncut_record.usage and record.error is None
    if b"\r\n" not in frames[0]:
        assert uncut == _general(frames, policy)[0]


def _two_lines(frame: bytes) -> bytes:
    """A `data:` event as two data lines, cut between two JSON tokens (SSE joins them
    with a newline: JSON whitespace). Azure sends one line; a proxy before it may not."""
    cut = frame.find(b',"')
    if not frame.startswith(b"data: {") or cut < 0:
        return frame
    return frame[:cut] + b"\ndata: " + frame[cut:]


@st.composite
def _streams(draw: st.DrawFn) -> list[bytes]:
    if draw(st.booleans()):
        frames = SEQUENCES[draw(st.integers(0, len(SEQUENCES) - 1))]
    else:
        frames = long_stream(draw(st.lists(st.text(max_size=12), min_size=1, max_size=12)))
    split = draw(st.sets(st.integers(0, len(frames) - 1), max_size=3))
    return [_two_lines(frame) if n in split else frame for n, frame in enumerate(frames)]


_STREAMS = _streams()


@st.composite
def _cuts(draw: st.DrawFn, frames: list[bytes]) -> list[int]:
    """Where to cut the body: at some event ends (a piece that starts at an event's
    start is what the steady shortcut and the cut at event ends see), and inside some
    events: anywhere, or at one of their line ends (between CR and LF among them)."""
    cuts, at = [], 0
    for frame in frames:
        if draw(st.booleans()):
            cuts.append(at)
        if draw(st.integers(0, 3)) == 0:
            ends = [n for n, byte in enumerate(frame) if byte in b"\r\n"]
            inside = draw(st.sampled_from(ends) if ends and draw(st.booleans())
                          else st.integers(1, len(frame) - 1))
            cuts.append(at + inside + draw(st.integers(0, 1)))
        at += len(frame)
    return cuts


@settings(max_examples=150, deadline=None)
@given(data=st.data(), frames=_STREAMS, crlf=st.booleans(), policy=st.sampled_from(POLICIES))
def test_a_body_cut_anywhere_gives_the_uncut_streams_bytes(
        data: st.DataObject, frames: list[bytes], crlf: bool, policy: StreamPolicy) -> None:
    if crlf:
        frames = _crlf(frames)
    _check(frames, _pieces(b"".join(frames), data.draw(_cuts(frames))), policy)


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("where", ["mid-event", "mid-newlines", "cr-lf", "several"])
def test_each_steady_event_cut_at_the_same_place(crlf: bool, where: str) -> None:
    """Every event of a long (steady) stream cut once at the same kind of place: the
    template is learned first, so the cuts land on the shortcut's path."""
    frames = long_stream([f" word{n}" for n in range(24)])
    if crlf:
        frames = _crlf(frames)
    pieces: list[bytes] = []
    carry = b""
    for n, event in enumerate(frames):
        end = len(event) - (4 if crlf else 2)  # where its blank line starts
        if where == "mid-event":
            at = len(event) // 2
        elif where == "mid-newlines":
            at = end + (2 if crlf else 1)  # after the first line end
        elif where == "cr-lf":  # between CR and LF (an LF stream: after the first LF)
            at = end + 1
        else:  # a piece of whole events and a part of the next: each third event
            at = len(event) // 3 if n % 3 == 2 else len(event)
        if where != "several":
            pieces.append(carry + event[:at])
            carry = event[at:]
        elif at < len(event):  # then the rest of that event alone: the next piece
            pieces += [carry + event[:at], event[at:]]  # starts at an event's start
            carry = b""
        else:
            carry += event
    pieces.append(carry)
    _check(frames, [p for p in pieces if p], StreamPolicy(client_model="gpt-4o",
                                                          strip_usage_frame=True))
