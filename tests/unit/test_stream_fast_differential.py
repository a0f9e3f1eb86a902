"""The stream normalizer's fast paths for a steady stream's other frames (the frame a
template is learned from, the learned frame with another choices array, the hidden usage
frame, a whole event off the steady path) against its general path (`fast=False`), on
generated streams: choices arrays of any size and content (tool calls, logprobs, filter
results, offsets, text, unicode), spelled in orjson's form or otherwise (spaces, unicode
escapes, keys moved, members repeated or added), usage frames likewise, error events,
comments, `data:` without its space, CRLF and CR line endings, events of several data
lines, `[DONE]` and bytes after it; fed whole, or cut anywhere into reads."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_stream_normalizer import (
    AZURE_MODEL,
    CREATED,
    DONE,
    FILTERS,
    ID,
    PROMPT_FILTERS,
    USAGE,
    async_annotation,
    delta,
    prompt_frame,
    role_frame,
)
from tests.unit.test_stream_normalizer import events as parsed_events
from tests.unit.test_stream_steady import POLICIES, relay

_TOP = {"created": CREATED, "id": ID, "model": AZURE_MODEL, "object": "chat.completion.chunk",
        "system_fingerprint": "fp_5b26d85e12"}
_TEXT = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ['"', "\\", "\n", "é", "🙂", "\u2028", '],"created":1', '"model":"x"'])
_RESULTS = st.sampled_from([
    FILTERS, {}, {**FILTERS, "hate": {"filtered": False, "severity": "low"}},
    {**FILTERS, "violence": {"filtered": True, "severity": "medium"}},
    {"custom_blocklists": [{"filtered": True, "id": "words"}]},
    {"protected_material_text": {"detected": True, "filtered": False}},
])
_LOGPROBS = st.one_of(st.none(), st.fixed_dictionaries({"content": st.lists(
    st.fixed_dictionaries({
        "token": _TEXT, "logprob": st.floats(-1e3, 0, allow_nan=False) | st.just(-1e-07),
        "bytes": st.lists(st.integers(0, 255), max_size=3), "top_logprobs": st.just([])}),
    max_size=2)}))
_TOOL_CALL = st.fixed_dictionaries(
    {"index": st.integers(0, 2)},
    optional={"id": st.just("call_1"), "type": st.just("function"),
              "function": st.fixed_dictionaries({}, optional={"name": _TEXT,
                                                              "arguments": _TEXT})})
_DELTA = st.one_of(
    st.fixed_dictionaries({}, optional={
        "content": _TEXT | st.none(), "role": st.just("assistant"), "refusal": _TEXT,
        "reasoning_content": _TEXT, "tool_calls": st.lists(_TOOL_CALL, max_size=2),
        "function_call": st.fixed_dictionaries({}, optional={"name": _TEXT,
                                                             "arguments": _TEXT})}),
    st.none(), st.just("x"), st.just([]),
)
_CHOICE = st.fixed_dictionaries({}, optional={
    "content_filter_results": _RESULTS,
    "content_filter_offsets": st.just({"check_offset": 1, "start_offset": 0, "end_offset": 9}),
    "delta": _DELTA, "text": _TEXT,
    "finish_reason": st.sampled_from([None, "stop", "length", "content_filter", "tool_calls",
                                      7]),
    "index": st.sampled_from([0, 0, 1, 2, "0", None]),
    "logprobs": _LOGPROBS,
})


def _azure_order(choice: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(choice.items()))


@st.composite
def _choices(draw: st.DrawFn) -> list[Any]:
    size = draw(st.sampled_from([1, 1, 1, 1, 0, 2, 3]))
    out: list[Any] = []
    for _ in range(size):
        choice = draw(_CHOICE)
        if draw(st.integers(0, 3)):
            choice = _azure_order(choice)
        out.append(choice)
    if out and draw(st.integers(0, 15)) == 0:
        out[0] = draw(st.sampled_from([None, 1, "x", []]))
    return out


def _spelled(draw: st.DrawFn, value: Any) -> bytes:
    """`value` as JSON: orjson's form mostly, else another valid spelling."""
    how = draw(st.integers(2, 9))
    if how <= 5:
        return orjson.dumps(value)
    if how == 6:  # unicode escaped
        return json.dumps(value, separators=(",", ":")).encode()
    if how == 7:  # spaced
        return json.dumps(value, ensure_ascii=False).encode()
    if how == 8:  # whitespace around, newlines inside
        return b" \t" + json.dumps(value, ensure_ascii=False, indent=1).encode() + b" "
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def _members(draw: st.DrawFn) -> bytes:
    """The learned frame's top-level members after its choices (`,"created":...`), or
    usually so: sometimes another id, created, model, an extra or repeated member."""
    top = dict(_TOP)
    # one frame in four changed (the draw of 0 to 8 leans to its ends)
    change = draw(st.integers(0, 8)) if draw(st.integers(0, 3)) == 3 else 9
    if change == 0:
        top["id"] = "chatcmpl-other"
    elif change == 1:
        top["created"] = CREATED + 1
    elif change == 2:
        top["model"] = "gpt-4o-mini"
    elif change == 3:
        top["usage"] = USAGE
    elif change == 4:
        top["error"] = {"message": "x"}
    elif change == 5:
        top["prompt_filter_results"] = PROMPT_FILTERS
    elif change == 6:
        top["object"] = ""
    members = orjson.dumps(top)[1:-1]
    if change == 7:
        members += b',"choices":[]'
    elif change == 8:
        members = members.replace(b'"created":', b'"created": ')
    return b"," + members + b"}"


@st.composite
def _other_choice_frame(draw: st.DrawFn) -> bytes:
    return b'{"choices":' + _spelled(draw, draw(_choices())) + _members(draw)


@st.composite
def _usage_frame(draw: st.DrawFn) -> bytes:
    usage: Any = draw(st.sampled_from([USAGE, USAGE, USAGE, {}, {"prompt_tokens": 1}, None,
                                       [USAGE], 3]))
    choices = b"[]" if draw(st.integers(0, 7)) else draw(st.sampled_from(
        [b"[ ]", b'[{"delta":{},"index":0}]', b"null"]))
    members = _members(draw)[:-1]
    tail = draw(st.sampled_from([b"}"] * 8 + [b',"x":1}', b',"usage":null}', b',"usage":{}}',
                                             b" }"]))
    return b'{"choices":' + choices + members + b',"usage":' + _spelled(draw, usage) + tail


@st.composite
def _data(draw: st.DrawFn) -> bytes:
    """One frame's data."""
    kind = draw(st.integers(0, 12))
    if kind <= 3:
        return draw(_other_choice_frame())
    if kind <= 6:
        return draw(_usage_frame())
    if kind == 7:  # a content frame of the learned shape
        return delta(draw(_TEXT), filters=draw(_RESULTS))[6:-2]
    if kind == 8:
        return async_annotation(0, 0, draw(st.integers(0, 9)))[6:-2]
    if kind == 9:
        return draw(st.sampled_from([b'{"error":{"message":"boom","code":"x"}}', b"[DONE]",
                                     b"not json", b"[1]", b'"x"', b"{}", b"",
                                     orjson.dumps({"choices": [], **_TOP})]))
    return delta(draw(_TEXT))[6:-2]


@st.composite
def _event(draw: st.DrawFn, data: bytes) -> bytes:
    """An SSE event of `data`: Azure's `data: <data>\\n\\n` mostly, else framed otherwise."""
    how = draw(st.integers(0, 12))
    if how <= 6 or b"\n" in data or b"\r" in data:
        if how == 6 and b"\n" in data:  # each line its own data line
            return b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
        return b"data: " + data + b"\n\n"
    if how == 7:
        return b"data:" + data + b"\n\n"
    if how == 8:
        return b"data: " + data + b"\r\n\r\n"
    if how == 9:
        return b"data: " + data + b"\r\r"
    if how == 10:
        return b": keep-alive\ndata: " + data + b"\nid: 3\n\n"
    if how == 11:
        return b"event: message\ndata: " + data + b"\n\n"
    cut = draw(st.integers(0, len(data)))  # two data lines: joined by the line break
    return b"data: " + data[:cut] + b"\ndata: " + data[cut:] + b"\n\n"


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """A steady stream's events: its template learned from an early content frame (in
    some framing), then generated frames, maybe `[DONE]` and bytes after it."""
    head = [prompt_frame(), role_frame()] if draw(st.booleans()) else [role_frame()]
    learned = delta(draw(_TEXT), filters=draw(_RESULTS))[6:-2]
    events = [*head, draw(_event(learned)), delta(" y")]
    for data in draw(st.lists(_data(), max_size=10)):
        events.append(draw(_event(data)))
    if draw(st.booleans()):
        events.append(DONE)
        if draw(st.booleans()):
            events.append(delta("late"))
    return events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_generated_steady_streams_come_out_as_the_general_paths(
        events: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    reads = [whole[a:b] for a, b in itertools.pairwise([0, *cuts, len(whole)])]
    # and each event cut at one offset, the two pieces fed apart
    at = data.draw(st.integers(0, 99))
    split = [part for event in events for part in (event[:at], event[at:]) if part]
    for policy in POLICIES:
        expected = relay(events, policy, fast=False)
        for pieces in (events, [whole], reads, split):
            _as_the_general_path(relay(pieces, policy, fast=True), expected)


def _as_the_general_path(fast: tuple[bytes, Any], general: tuple[bytes, Any]) -> None:
    """Byte for byte, but for one liberty the fast path takes on purpose (pinned by
    test_stream_steady's `..._keeps_azure_spelling_...`): a steady frame's choice is
    relayed as Azure spelled it, so a `\\u` escape or an escaped slash that orjson
    writes as the character stays escaped. Then the events' JSON and the state agree."""
    if fast == general:
        return
    assert fast[1] == general[1]
    assert b"\\u" in fast[0] or b"\\/" in fast[0], (fast[0], general[0])
    assert parsed_events(fast[0]) == parsed_events(general[0])


def test_each_frame_cut_at_every_offset_comes_out_as_the_general_paths() -> None:
    frames = [prompt_frame(), role_frame(), delta(" x"), delta(" y"),
              b'data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":'
              b'"stop","index":0,"logprobs":null}]' + _members_of(_TOP) + b"\n\n",
              b'data: {"choices":[]' + _members_of(_TOP)[:-1] + b',"usage":'
              + orjson.dumps(USAGE) + b"}\n\n", DONE]
    whole = b"".join(frames)
    for policy in POLICIES:
        expected = relay(frames, policy, fast=False)
        for at in range(len(whole) + 1):
            assert relay([whole[:at], whole[at:]], policy, fast=True) == expected, at


def _members_of(top: dict[str, Any]) -> bytes:
    return b"," + orjson.dumps(top)[1:]


def test_a_steady_frame_sent_as_two_data_lines_cut_between_tokens_goes_out_in_one_line() -> None:
    # Hypothesis found it: the two lines join with b"\n", JSON whitespace there, so the
    # frame matched the learned template and went out raw, its second line a line of its
    # own to the client (here a comment line, `:0,...`, the rest of the JSON lost).
    frame = delta(" z")
    cut = frame.index(b':0,"logprobs"')
    two_lines = frame[:cut] + b"\ndata: " + frame[cut:]
    events = [role_frame(), delta(" x"), delta(" y"), two_lines, DONE]
    for policy in POLICIES:
        out, _ = relay(events, policy, fast=True)
        assert out == relay(events, policy, fast=False)[0]
        for event in out.split(b"\n\n")[:-1]:
            assert event.count(b"\n") == 0 and event.startswith(b"data: ")
        assert orjson.loads(out.split(b"\n\n")[3][6:])["choices"][0]["delta"] == {"content": " z"}
