"""The stream normalizer's first frames without whole parses: the steady template
presumed from the role frame and completed by the first content frame's results
(`SteadyFrameTemplate.presumed`, normalize/steady.py), and the annotation template learned from
the first annotation frame's bytes (`AnnotationFrameTemplate.from_bytes`). Against the
general path (`fast=False`), byte for byte and in every count, on recorded-shape Azure
sequences (the emulator's) and on streams whose frames do not fit (then learned as
before), however the bytes are cut into reads."""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.emulator import frames as emulated
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import RequestFacts, plan_chat
from azure_openai_proxy.normalize import stream as stream_module
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import SseDecoder
from tests.unit.test_stream_normalizer import (
    DONE,
    FILTERS,
    chunk,
    finish_frame,
    prompt_frame,
    role_frame,
    usage_frame,
)
from tests.unit.test_stream_steady import POLICIES, relay, relay_by_pieces

SAFE = {name: {"filtered": False, "severity": "safe"}  # in Azure's key order (sorted)
        for name in ("hate", "self_harm", "sexual", "violence")}
LOW = {**SAFE, "hate": {"filtered": False, "severity": "low"}}
BLOCKED = {**SAFE, "violence": {"filtered": True, "severity": "medium"}}
RESULTS = [SAFE, SAFE, {}, LOW, FILTERS, BLOCKED, None]  # FILTERS: the fixtures' key order


def emulated_stream(*, async_filter: bool, usage: bool = True, n: int = 1,
                    tokens: int = 40) -> list[bytes]:
    """What the emulator streams for gpt-4o (Azure's recorded frame sequence)."""
    deployment = EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat",
                                    async_filter=async_filter)
    facts = RequestFacts(deployment, "abc", 1700000000, "prompt_filter_results", tokens)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                            "n": n}
    if usage:
        body["stream_options"] = {"include_usage": True}
    return [frame.encode() for frame in emulated.chat_stream(plan_chat(body, facts), 2)]


def content(word: str, results: Any = SAFE) -> bytes:
    return chunk({"content_filter_results": results, "delta": {"content": word},
                  "finish_reason": None, "index": 0, "logprobs": None})


def annotation(offset: int, results: Any = SAFE) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{
        "content_filter_offsets": {"check_offset": offset, "start_offset": offset,
                                   "end_offset": offset + 9},
        "content_filter_results": results, "finish_reason": None, "index": 0}],
        "created": 0, "id": "", "model": "", "object": ""}) + b"\n\n"


def sorted_stream(words: list[str], results: list[Any], notes: list[Any]) -> list[bytes]:
    """A default-filter stream in Azure's key order: a content frame a word (its results
    drawn from `results` in turn), an annotation after every third (from `notes`)."""
    out = [prompt_frame(), role_frame()]
    for n, word in enumerate(words):
        out.append(content(word, results[n % len(results)]))
        if n % 3 == 2:
            out.append(annotation(n, notes[n % len(notes)]))
    return [*out, finish_frame("stop"), usage_frame(), DONE]


WORDS = [" The", " capital", ' "quoted"', " é 中文 🙂", " of", " \\ slash", " France", "\n"]
SEQUENCES = [
    emulated_stream(async_filter=False), emulated_stream(async_filter=True),
    emulated_stream(async_filter=False, usage=False), emulated_stream(async_filter=True, n=2),
    sorted_stream(WORDS, [SAFE], [SAFE]),
    sorted_stream(WORDS, [LOW, SAFE], [SAFE]),  # the first content frame misses
    sorted_stream(WORDS, [SAFE, LOW], [LOW, SAFE]),  # a later one, the first annotation
    sorted_stream(WORDS, [{}], [FILTERS]),  # the async filter's content frames
    sorted_stream(WORDS, [SAFE], [BLOCKED, SAFE]),  # a verdict that blocks comes first
    sorted_stream(WORDS[:1], [SAFE], [SAFE]), sorted_stream([], [SAFE], [SAFE]),
]


def test_presumed_templates_write_what_the_general_path_writes() -> None:
    for frames in SEQUENCES:
        for policy in POLICIES:
            expected = relay(frames, policy, fast=False)
            assert relay_by_pieces(frames, policy) == expected
            assert relay(frames, policy, fast=True) == expected


@contextlib.contextmanager
def whole_parses() -> Iterator[list[bytes]]:
    """What `stream.py` hands `orjson.loads` meanwhile (the general path's whole parses)."""
    loads = orjson.loads
    parsed: list[bytes] = []

    def spied(data: bytes) -> Any:
        parsed.append(data)
        return loads(data)

    stream_module.orjson = types.SimpleNamespace(  # type: ignore[attr-defined]
        loads=spied, dumps=orjson.dumps, JSONDecodeError=orjson.JSONDecodeError)
    try:
        yield parsed
    finally:
        stream_module.orjson = orjson  # type: ignore[attr-defined]


def test_the_first_content_frame_completes_the_template_presumed_from_the_role_frame() -> None:
    frames = emulated_stream(async_filter=False)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    normalizer = ChatStreamNormalizer(policy)
    reference = ChatStreamNormalizer(policy, fast=False)
    for frame in frames[:2]:  # the prompt filter's frame, the role frame
        assert normalizer.feed(frame) == reference.feed(frame)
    expected = reference.feed(frames[2])
    with whole_parses() as parsed:
        assert normalizer.feed(frames[2]) == expected
    assert parsed == []  # the first content frame: not parsed whole
    steady = normalizer.steady_relay()
    assert steady is not None and steady(frames[3]) == reference.feed(frames[3])
    assert (normalizer.frames_in, normalizer.frames_out, normalizer.content_chars) == (
        reference.frames_in, reference.frames_out, reference.content_chars)


def test_the_first_annotation_frame_teaches_the_template_unparsed() -> None:
    frames = emulated_stream(async_filter=True)
    first = next(n for n, frame in enumerate(frames) if b"content_filter_offsets" in frame)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in frames[:first]:
        normalizer.feed(frame)
    with whole_parses() as parsed:
        assert normalizer.feed(frames[first]) == b""
    assert parsed == []  # not parsed whole by the general path
    drop = normalizer.annotation_drop()
    assert drop is not None and drop(frames[first].replace(b'"end_offset":', b'"end_offset":1'))
    assert normalizer.frames_in == first + 2


def test_no_template_is_presumed_for_the_general_path_or_stripped_fields() -> None:
    frames = emulated_stream(async_filter=False)
    for policy, fast in [(StreamPolicy(client_model="gpt-4o"), False),
                         (StreamPolicy(client_model="gpt-4o", keep_azure_fields=False), True)]:
        normalizer = ChatStreamNormalizer(policy, fast=fast)
        for frame in frames[:2]:
            normalizer.feed(frame)
        assert normalizer.shortcuts() == (None, None)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=10),
       st.lists(st.sampled_from(RESULTS), min_size=1, max_size=4),
       st.lists(st.sampled_from(RESULTS), min_size=1, max_size=3), st.data())
def test_any_results_and_any_cut_give_the_general_paths_bytes(
        words: list[str], results: list[Any], notes: list[Any], data: st.DataObject) -> None:
    frames = sorted_stream(words, results, notes)
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    whole = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=12)))
    reads = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    assert relay(reads, policy, fast=True) == expected
    assert relay_by_pieces(reads, policy) == expected
    assert relay_by_pieces(frames, policy) == expected


def test_every_split_point_of_the_emulators_streams() -> None:
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    for frames in (emulated_stream(async_filter=False, tokens=5),
                   emulated_stream(async_filter=True, tokens=5),
                   sorted_stream(WORDS[:3], [LOW, SAFE], [LOW, SAFE])):
        whole = b"".join(frames)
        expected = relay(frames, policy, fast=False)
        for cut in range(len(whole) + 1):
            reads = [whole[:cut], whole[cut:]]
            assert relay(reads, policy, fast=True) == expected, cut
            assert relay_by_pieces(reads, policy) == expected, cut


def test_single_takes_the_streams_first_event_as_feed_does() -> None:
    event = prompt_frame()
    decoder, reference = SseDecoder(), SseDecoder()
    assert decoder.single(event) == reference.feed(event)[0].data == event[6:-2]
    assert decoder.idle() and reference.idle()
    for later in (role_frame(), b"data: x", b"\n\n", DONE):
        assert decoder.feed(later) == reference.feed(later)
    # A first event behind a byte order mark is the decoder's to strip: not single's.
    marked = SseDecoder()
    assert marked.single(b"\xef\xbb\xbf" + event) is None
    assert [e.data for e in marked.feed(b"\xef\xbb\xbf" + event)] == [event[6:-2]]


def test_a_role_frame_whose_members_differ_leaves_the_template_to_be_learned() -> None:
    # The role frame without the `system_fingerprint` its content frames carry: its ends
    # are none of theirs, so the first content frame cannot complete a template that
    # would ever match. It must be learned from, as before: not every frame parsed whole.
    role = role_frame().replace(b',"system_fingerprint":"fp_5b26d85e12"', b"")
    assert role != role_frame()
    for policy in POLICIES:
        counts = []
        for first in (role_frame(), role):
            frames = [prompt_frame(), first, *(content(word) for word in WORDS),
                      finish_frame("stop"), usage_frame(), DONE]
            expected = relay(frames, policy, fast=False)
            with whole_parses() as parsed:
                assert relay_by_pieces(frames, policy) == expected
            counts.append(len(parsed))
        # With it, one whole parse more: the first content frame, learned from (none
        # where no template is ever learned, Azure's fields stripped).
        assert counts[1] == counts[0] + (1 if policy.keep_azure_fields else 0), policy


def test_only_results_in_orjsons_form_complete_the_template() -> None:
    # Results Azure spelled otherwise (a space, an escape): a template completed by their
    # bytes would write them so, where the general path writes orjson's spelling.
    spaced = content(" Paris").replace(b'{"filtered":false', b'{"filtered": false', 1)
    escaped = content(" Paris").replace(b'"safe"', b'"s\\u0061fe"', 1)
    for first in (spaced, escaped):
        assert first != content(" Paris")
        frames = [prompt_frame(), role_frame(), first, *(content(word) for word in WORDS),
                  finish_frame("stop"), usage_frame(), DONE]
        for policy in POLICIES:
            expected = relay(frames, policy, fast=False)
            assert relay(frames, policy, fast=True) == expected
            assert relay_by_pieces(frames, policy) == expected


def test_only_an_annotation_frame_with_azures_rest_teaches_the_template() -> None:
    # Azure's annotation frame but for a finish reason as long as its `null`: the general
    # path keeps that choice (no annotation), so no template learned from its bytes may
    # drop it.
    finished = annotation(3).replace(b'"finish_reason":null', b'"finish_reason":"ab"')
    frames = [prompt_frame(), role_frame(), *(content(word) for word in WORDS[:3]), finished,
              *(content(word) for word in WORDS[3:]), finish_frame("stop"), usage_frame(), DONE]
    for policy in POLICIES:
        expected = relay(frames, policy, fast=False)
        assert relay(frames, policy, fast=True) == expected
        assert relay_by_pieces(frames, policy) == expected


def test_frames_with_a_null_usage_are_the_general_paths() -> None:
    # OpenAI's documented chunks under `include_usage`: `"usage":null` in every frame but
    # the last. The general path drops the member where the usage frame is hidden, so a
    # template presumed from such a role frame would relay it where it must not.
    def nulled(frame: bytes) -> bytes:
        return frame.replace(b'"system_fingerprint":"fp_5b26d85e12"}',
                             b'"system_fingerprint":"fp_5b26d85e12","usage":null}')

    frames = [prompt_frame(), nulled(role_frame()), *(nulled(content(word)) for word in WORDS),
              nulled(finish_frame("stop")), usage_frame(), DONE]
    assert frames[1] != role_frame()
    for policy in POLICIES:
        expected = relay(frames, policy, fast=False)
        assert relay(frames, policy, fast=True) == expected
        assert relay_by_pieces(frames, policy) == expected


def test_a_role_frame_after_the_streams_created_is_known_presumes_nothing() -> None:
    # A frame before the role frame without an id but with another `created`: the stream
    # keeps that one, and the general path writes it into every frame after. A template
    # presumed from the role frame's own members would relay its `created` instead.
    early = content("", {}).replace(b'"created":1727000000', b'"created":1700000000').replace(
        b'"id":"chatcmpl-AzR3c0rded"', b'"id":""')
    frames = [prompt_frame(), early, role_frame(), *(content(word) for word in WORDS),
              finish_frame("stop"), usage_frame(), DONE]
    assert b'"created":1700000000' in early and b'"id":""' in early
    for policy in POLICIES:
        expected = relay(frames, policy, fast=False)
        assert relay(frames, policy, fast=True) == expected
        assert relay_by_pieces(frames, policy) == expected


def test_a_stream_spelled_otherwise_than_orjson_is_written_as_the_general_path_writes_it() -> None:
    # Every content frame with its text escaped as ASCII (`\u00e9`, as `json.dumps`
    # writes it) or a logprob spelled with an exponent: no template is learned from such
    # frames (none is in orjson's form), so every one is written again in orjson's
    # spelling. A template completed from the first one's results alone would relay
    # them in Azure's spelling.
    def ascii_content(word: str) -> bytes:
        return content(word).replace(b'"content":"' + word.encode(),
                                     b'"content":' + json.dumps(word).encode()[:-1])

    def exponent(word: str) -> bytes:
        return content(word).replace(b'"logprobs":null', b'"logprobs":{"content":[{"bytes":[97],'
                                     b'"logprob":-1.5E-5,"token":"a","top_logprobs":[]}]}')

    for spelled in (ascii_content, exponent):
        first = spelled(" é")
        assert orjson.dumps(orjson.loads(first[6:-2])) != first[6:-2]
        frames = [prompt_frame(), role_frame(), *(spelled(word) for word in (" é", " ü", " x")),
                  finish_frame("stop"), usage_frame(), DONE]
        for policy in POLICIES:
            expected = relay(frames, policy, fast=False)
            assert relay(frames, policy, fast=True) == expected, spelled
            assert relay_by_pieces(frames, policy) == expected, spelled
