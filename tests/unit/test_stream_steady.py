"""The stream normalizer's fast paths (`normalize/steady.py`: steady content frames, and
the async filter's annotation frames, dropped) against its
general path (`ChatStreamNormalizer(..., fast=False)`): byte for byte on recorded Azure
frame sequences, however the bytes are split into reads."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.emulator import frames as emulated
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import RequestFacts, plan_chat
from azure_openai_proxy.normalize.steady import (
    AnnotationFrameTemplate,
    PaddedFrameTemplate,
    SteadyFrameTemplate,
)
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_stream_normalizer import (
    ASYNC_FILTER,
    AZURE_MODEL,
    BLOCKED_AFTER_STOP,
    CREATED,
    CUT,
    DEFAULT_FILTER,
    DEFAULT_WITH_USAGE,
    DONE,
    FILTERED_MID_STREAM,
    FILTERS,
    ID,
    PROMPT_ANNOTATIONS,
    TOOL_CALLS,
    USAGE,
    async_annotation,
    chunk,
    delta,
    events,
    finish_frame,
    prompt_frame,
    role_frame,
    usage_frame,
)

POLICIES = [
    StreamPolicy(client_model="gpt-4o"),
    StreamPolicy(client_model="gpt-4o", strip_usage_frame=True),
    StreamPolicy(client_model=None),
    StreamPolicy(client_model=AZURE_MODEL),
    StreamPolicy(client_model="gpt-4o", keep_azure_fields=False),
]
WORDS = [" The", " capital", " of", " France", " is", " Paris", ".", ' "quoted"', " \\ slash",
         " é ü 中文 🙂", ' "model":"x"', '],"created":1', "\n\nnewline"]


def long_stream(words: list[str] = WORDS, *, annotate: bool = True) -> list[bytes]:
    """A default-filter stream long enough for the template to be learned and used."""
    out = [prompt_frame(), role_frame()]
    for n, word in enumerate(words):
        out.append(delta(word))
        if annotate and n % 4 == 3:
            out.append(async_annotation(n, n, n + 4))
    return [*out, finish_frame("stop"), usage_frame(), DONE]


# Azure's gpt-5 family pads each chunk with a choice: `"obfuscation":"..."` after `model`
# (meilisearch#6341; OpenAI's are alphanumeric, 2-16 characters: `ZGF`, `lRK2aBv`).
# Among them, values the fast path must leave to the general path (escaped in JSON, or
# not UTF-8 once spliced back) and some it may take (brackets, non-ASCII, empty).
PADDINGS = ["k3Zr9", "", "Xy", "0123456789abcdef", "]},{[", '"', "\\", "\u00e9\u4e2d", "\x7f",
            "\t", '","model":"x', "lRK2aBv"]


def padded(event: bytes, padding: str) -> bytes:
    """A chunk with a choice (not the async filter's or the prompt filter's frame, whose
    `model` is empty) as a gpt-5 model's: `obfuscation` after `model`."""
    if not event.startswith(b'data: {"choices":[{'):
        return event
    obj = orjson.loads(event[6:])
    if not obj.get("model"):
        return event
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[key] = value
        if key == "model":
            out["obfuscation"] = padding
    return b"data: " + orjson.dumps(out) + b"\n\n"


def padded_stream(frames: list[bytes], paddings: list[str] = PADDINGS) -> list[bytes]:
    return [padded(event, paddings[n % len(paddings)]) for n, event in enumerate(frames)]


def gpt5_stream(**options: Any) -> list[bytes]:
    """What the emulator streams for gpt-5-mini (its obfuscation frames, 0a8d422)."""
    deployment = EmulatedDeployment("gpt-5-mini", "gpt-5-mini-2025-08-07", "chat")
    facts = RequestFacts(deployment, "abc", 1700000000, "prompt_filter_results", 30)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True, **options}}
    return [frame.encode() for frame in emulated.chat_stream(plan_chat(body, facts), 1)]


SEQUENCES = [DEFAULT_FILTER, DEFAULT_WITH_USAGE, ASYNC_FILTER, PROMPT_ANNOTATIONS, TOOL_CALLS,
             FILTERED_MID_STREAM, CUT, BLOCKED_AFTER_STOP, long_stream(), long_stream(annotate=False),
             [*long_stream()[:6], prompt_frame(), *long_stream()[6:]],
             padded_stream(long_stream()), padded_stream(long_stream(), PADDINGS[5:]),
             padded_stream(TOOL_CALLS), padded_stream(FILTERED_MID_STREAM), gpt5_stream()]


def relay(reads: list[bytes], policy: StreamPolicy, *, fast: bool) -> tuple[bytes, Any]:
    normalizer = ChatStreamNormalizer(policy, fast=fast)
    out = b"".join(normalizer.feed(read) for read in reads) + normalizer.finish()
    return out, (normalizer.usage, normalizer.finish_reasons, normalizer.frames_in,
                 normalizer.frames_out, normalizer.done, normalizer.content_chars)


def test_recorded_sequences_come_out_byte_identical_to_the_general_path() -> None:
    for frames in SEQUENCES:
        for policy in POLICIES:
            assert relay(frames, policy, fast=True) == relay(frames, policy, fast=False)


def test_the_template_is_learned_from_a_recorded_content_frame() -> None:
    content = delta("The capital of ")
    data = content[6:-2]
    template = SteadyFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    later = delta(' France "is" Paris.')[6:-2]
    rest = template.match(later)
    assert rest == {"delta": {"content": ' France "is" Paris.'}, "finish_reason": None,
                    "index": 0, "logprobs": None}
    want = orjson.loads(later)
    want["model"] = "gpt-4o"
    assert template.relayed(later) == b"data: " + orjson.dumps(want) + b"\n\n"


def test_frames_of_another_shape_are_not_matched() -> None:
    data = delta("x")[6:-2]
    template = SteadyFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    other_filters = delta("x", filters={**FILTERS, "hate": {"filtered": True, "severity": "low"}})
    two_choices = orjson.loads(data)
    two_choices["choices"] *= 2
    other_id = orjson.loads(data)
    other_id["id"] = "chatcmpl-other"
    repeated_filter = data.replace(b'"index":0', b'"index":0,"content_filter_results":{}')
    broken = data.replace(b'"logprobs":null', b'"logprobs":nul')
    for frame in (other_filters[6:-2], orjson.dumps(two_choices), orjson.dumps(other_id),
                  repeated_filter, broken, usage_frame()[6:-2]):
        assert template.match(frame) is None


def test_no_template_from_a_frame_not_in_orjson_form_or_without_filter_results() -> None:
    data = delta("x")[6:-2]
    spaced = data.replace(b'"created":', b'"created": ')
    assert SteadyFrameTemplate.learn(spaced, orjson.loads(spaced), "m") is None
    bare = chunk({"delta": {"content": "x"}, "index": 0})[6:-2]
    assert SteadyFrameTemplate.learn(bare, orjson.loads(bare), "m") is None


def test_a_steady_frame_keeps_azure_spelling_with_only_the_model_spliced() -> None:
    # Azure may escape what orjson writes raw: the fast path relays its bytes as they
    # are (the JSON value is the same as the general path's).
    escaped = delta("caf\u00e9")[:-2].replace("é".encode(), b"\\u00e9") + b"\n\n"
    frames = [prompt_frame(), role_frame(), delta("a"), delta("b"), escaped, DONE]
    policy = StreamPolicy(client_model="gpt-4o")
    fast, fast_state = relay(frames, policy, fast=True)
    general, general_state = relay(frames, policy, fast=False)
    assert b"caf\\u00e9" in fast and b"caf\\u00e9" not in general
    assert events(fast) == events(general) and fast_state == general_state
    [spliced] = [e for e in fast.split(b"\n\n") if b"caf" in e]
    assert spliced == escaped[:-2].replace(f'"model":"{AZURE_MODEL}"'.encode(),
                                           b'"model":"gpt-4o"')


def test_id_created_and_object_of_the_stream_hold_on_fast_frames() -> None:
    out, _ = relay(long_stream(), StreamPolicy(client_model="gpt-4o"), fast=True)
    frames = [e for e in events(out) if isinstance(e, dict) and e.get("choices")]
    assert {(f["id"], f["created"], f["model"], f["object"]) for f in frames} == {
        (ID, CREATED, "gpt-4o", "chat.completion.chunk")}


def cut_anywhere(frames: list[bytes], data: st.DataObject) -> list[bytes]:
    """The stream's bytes cut into pieces at up to 20 points hypothesis draws."""
    whole = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=20)))
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=12), st.data())
def test_any_split_into_reads_gives_the_general_paths_bytes(words: list[str],
                                                            data: st.DataObject) -> None:
    frames = long_stream(words)
    reads = cut_anywhere(frames, data)
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    assert relay(reads, policy, fast=True) == expected
    per_read = data.draw(st.integers(1, 6))  # several whole frames per read
    grouped = [b"".join(frames[i:i + per_read]) for i in range(0, len(frames), per_read)]
    assert relay(grouped, policy, fast=True) == expected


def test_every_single_split_point_of_a_recorded_stream() -> None:
    frames = long_stream(WORDS[:6])
    whole = b"".join(frames)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    expected = relay(frames, policy, fast=False)
    for cut in range(len(whole) + 1):
        assert relay([whole[:cut], whole[cut:]], policy, fast=True) == expected


def _annotation_template() -> AnnotationFrameTemplate:
    data = async_annotation(0, 0, 22)[6:-2]
    template = AnnotationFrameTemplate.learn(data, orjson.loads(data))
    assert template is not None
    return template


def test_the_annotation_template_matches_the_async_filters_later_frames() -> None:
    template = _annotation_template()
    assert template.matches(async_annotation(22, 22, 1032)[6:-2])
    assert template.matches(async_annotation(7, 0, 0)[6:-2].replace(
        b'"check_offset":7,"start_offset":0,"end_offset":0', b""))  # empty offsets


def test_no_frame_that_the_general_path_would_keep_matches_the_annotation_template() -> None:
    template = _annotation_template()
    data = async_annotation(0, 0, 22)[6:-2]
    inner = b'"check_offset":0,"start_offset":0,"end_offset":22'
    smuggled = [  # a middle that would reach past the offsets object
        b'"a":1},"delta":{"content":"evil"},"x":{"b":2',
        b'"a":"}],\\"x\\":\\"',
        b'"a":1}}],"error":{"message":"x"},"z":[{"q":{"b":2',
        b'"a":[1}',
    ]
    for middle in smuggled:
        assert not template.matches(data.replace(inner, middle))
    other_results = async_annotation(0, 0, 22).replace(b'"safe"', b'"low"', 1)[6:-2]
    for frame in (delta("x")[6:-2], finish_frame()[6:-2], usage_frame()[6:-2], other_results,
                  data[:-1], data + b" "):
        assert not template.matches(frame)


def test_no_annotation_template_from_a_frame_not_in_orjson_form() -> None:
    data = async_annotation(0, 0, 22)[6:-2]
    spaced = data.replace(b'"index":0', b'"index": 0')
    assert AnnotationFrameTemplate.learn(spaced, orjson.loads(spaced)) is None
    assert AnnotationFrameTemplate.learn(delta("x")[6:-2], orjson.loads(delta("x")[6:-2])) is None


def test_a_stream_of_annotations_comes_out_as_the_general_paths() -> None:
    frames = [prompt_frame(), role_frame(), delta("a"), async_annotation(0, 0, 1), delta("b"),
              async_annotation(1, 1, 2),
              async_annotation(1, 1, 2).replace(b'"check_offset":1', b'"check_offset":1.5e3'),
              async_annotation(2, 2, 3)[:-2].replace(b'"end_offset":3}', b'"end_offset":3},"delta":{}') + b"\n\n",
              delta("c"), finish_frame(), async_annotation(3, 3, 4), usage_frame(), DONE]
    for policy in POLICIES:
        assert relay(frames, policy, fast=True) == relay(frames, policy, fast=False)


# ---- `steady_relay()`: a whole steady event relayed before `feed()` (the pushed relay) ----


def relay_by_pieces(pieces: list[bytes], policy: StreamPolicy) -> tuple[bytes, Any]:
    """As the pushed relay feeds the normalizer: each piece to `steady_relay()` first,
    then `annotation_drop()`, while they are offered, else to `feed()`."""
    normalizer = ChatStreamNormalizer(policy)
    out: list[bytes] = []
    steady = drop = None
    for piece in pieces:
        if steady is not None:
            relayed = steady(piece)
            if relayed is not None:
                out.append(relayed)
                continue
            if drop is not None and drop(piece):
                continue
        out.append(normalizer.feed(piece))
        steady, drop = normalizer.steady_relay(), normalizer.annotation_drop()
    out.append(normalizer.finish())
    return b"".join(out), (normalizer.usage, normalizer.finish_reasons, normalizer.frames_in,
                           normalizer.frames_out, normalizer.done, normalizer.content_chars)


def test_recorded_sequences_by_steady_relay_are_the_general_paths() -> None:
    for frames in SEQUENCES:
        for policy in POLICIES:
            assert relay_by_pieces(frames, policy) == relay(frames, policy, fast=False)


def test_steady_relay_takes_the_steady_frames_of_a_long_stream() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    frames = long_stream(annotate=False)
    for frame in frames[:3]:  # prompt filter, role, the first delta (learned from)
        normalizer.feed(frame)
    steady = normalizer.steady_relay()
    assert steady is not None
    relayed = steady(frames[3])
    assert relayed is not None and b'"model":"gpt-4o"' in relayed
    assert steady(frames[-3]) is None  # the finish frame: another choice tail
    assert steady(DONE) is None
    assert steady(frames[4][:50]) is None  # part of an event
    normalizer.feed(frames[4][:50])
    assert normalizer.steady_relay() is None  # something buffered: only feed() now
    normalizer.feed(frames[4][50:])
    assert normalizer.steady_relay() is not None


def test_steady_relay_refuses_what_the_general_path_would_read_otherwise() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:3]:
        normalizer.feed(frame)
    steady = normalizer.steady_relay()
    assert steady is not None
    good = delta("x")
    value = b'{"content":"x"}'
    refused = [
        good.replace(value, b'{"content":\n"x"}'),  # a line break as JSON whitespace
        good.replace(value, b'{"content":\r"x"}'),
        good.replace(value, b'{"content":"x"'),  # not one JSON value
        good.replace(b'"finish_reason":null', b'"finish_reason":"stop"'),
        good[:-1], good + b"\n", b"data:" + good[6:],
    ]
    for event in refused:
        assert steady(event) is None, event
    frames_in = normalizer.frames_in
    assert steady(good.replace(value, b' {"content" :"x"}\t')) is not None  # spaces: one value
    assert steady(good.replace(b'"logprobs":null', b'"logprobs":{"content":[]}')) is not None
    assert normalizer.frames_in == frames_in + 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=12), st.data())
def test_any_split_by_steady_relay_gives_the_general_paths_bytes(words: list[str],
                                                                 data: st.DataObject) -> None:
    frames = long_stream(words)
    pieces = cut_anywhere(frames, data)
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    assert relay_by_pieces(pieces, policy) == expected
    per_piece = data.draw(st.integers(1, 6))  # several whole frames in one piece
    grouped = [b"".join(frames[i:i + per_piece]) for i in range(0, len(frames), per_piece)]
    assert relay_by_pieces(grouped, policy) == expected


def test_annotation_drop_takes_only_the_learned_annotation_frame_whole() -> None:
    template = _annotation_template()
    event = async_annotation(22, 22, 1032)
    assert template.drop(event) and template.dropped == 1
    inner = b'"check_offset":22,"start_offset":22,"end_offset":1032'
    refused = [
        event.replace(inner, b'"check_offset":22,\n"start_offset":22'),  # a line break
        event.replace(inner, b'"check_offset":22\r'),
        event.replace(inner, b'"a":1},"delta":{"content":"evil"},"x":{"b":2'),
        event[:-1], event + b"\n", delta("x"), DONE,
    ]
    for other in refused:
        assert not template.drop(other), other
    assert template.dropped == 1
    assert template.drop(event.replace(inner, b""))  # empty offsets, as `matches()`


def test_later_annotation_frames_are_dropped_by_annotation_drop() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:3]:
        normalizer.feed(frame)
    assert normalizer.annotation_drop() is None  # none learned yet
    assert normalizer.feed(async_annotation(0, 0, 4)) == b""  # learned from this one
    drop = normalizer.annotation_drop()
    assert drop is not None and drop(async_annotation(4, 4, 8))
    assert (normalizer.frames_in, normalizer.frames_out) == (5, 2)


def test_frames_whose_logprobs_vary_come_out_as_the_general_paths() -> None:
    # The choice's members after the delta are learned into `relay()`'s plain-text end:
    # a stream with logprobs (another value each frame) takes the template's wider
    # `match()` instead.
    frames = [prompt_frame(), role_frame()]
    for n, word in enumerate(WORDS):
        frames.append(chunk({"content_filter_results": FILTERS, "delta": {"content": word},
                             "finish_reason": None, "index": 0,
                             "logprobs": {"content": [{"token": word, "logprob": -n}]}}))
    frames += [finish_frame("stop"), usage_frame(), DONE]
    for policy in POLICIES:
        assert relay_by_pieces(frames, policy) == relay(frames, policy, fast=False)


def learned(frames: list[bytes]) -> tuple[ChatStreamNormalizer, Any]:
    """A normalizer fed a stream's first three frames (prompt filter, role, the first
    delta, learned from) and the steady relay it then offers."""
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in frames[:3]:
        normalizer.feed(frame)
    steady = normalizer.steady_relay()
    assert steady is not None
    return normalizer, steady


def test_plain_text_deltas_are_counted_as_the_general_path_counts_them() -> None:
    # `{"content":"..."}` with nothing escaped is not parsed: text is counted by its bytes
    # (UTF-8 outside ASCII, as a prompt), checked by orjson; escaped text, and bytes that are not UTF-8, are not
    # taken as plain (the parsed path decides, and the general path drops a frame that is
    # not JSON).
    texts = ["plain", "", "caf\u00e9 \u4e2d\u6587 \U0001f642", 'say "hi"', "tab\there",
             "back\\slash", "\x7f"]
    frames = [prompt_frame(), role_frame(), *(delta(text) for text in texts)]
    not_utf8 = delta("abc").replace(b"abc", b"a\xffc")
    frames += [not_utf8, delta("after"), finish_frame("stop"), usage_frame(), DONE]
    for policy in POLICIES:
        assert relay_by_pieces(frames, policy) == relay(frames, policy, fast=False)
    normalizer, steady = learned(frames)
    assert steady(not_utf8) is None
    chars = normalizer.content_chars
    assert steady(delta("\u4e2d\u6587")) is not None
    assert normalizer.content_chars == chars + 6  # two characters, 6 bytes


# ---- gpt-5's padded chunks (`PaddedFrameTemplate`) ----


def test_a_padded_template_matches_later_frames_with_other_paddings() -> None:
    data = padded(delta("The capital of "), "k3Zr9")[6:-2]
    template = PaddedFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    for padding in ("lRK2aBv", "", "]},{[", "\u00e9\u4e2d"):
        later = padded(delta(' France "is" Paris.'), padding)[6:-2]
        assert template.match(later) == {"delta": {"content": ' France "is" Paris.'},
                                         "finish_reason": None, "index": 0, "logprobs": None}
        want = orjson.loads(later)
        want["model"] = "gpt-4o"
        assert template.relayed(later) == b"data: " + orjson.dumps(want) + b"\n\n"
        assert template.relay(padded(delta(" France"), padding)) == b"data: " + orjson.dumps(
            {**orjson.loads(padded(delta(" France"), padding)[6:]), "model": "gpt-4o"}) + b"\n\n"
    finish = padded(finish_frame("stop"), "Xy")[6:-2]
    assert template.choices(finish) == orjson.loads(finish)["choices"]
    assert template.usage(usage_frame()[6:-2]) == USAGE  # Azure pads no usage frame


def test_a_padding_the_general_path_would_read_otherwise_is_refused() -> None:
    data = padded(delta("x"), "k3Zr9")[6:-2]
    template = PaddedFrameTemplate.learn(data, orjson.loads(data), "gpt-4o")
    assert template is not None
    member = b'"obfuscation":"k3Zr9"'
    refused = [
        b'"obfuscation":"a","model":"evil"',  # a second model after the padding
        b'"obfuscation":"a\\"b"', b'"obfuscation":"a\\\\"',  # escapes: orjson would rewrite
        b'"obfuscation":"ab\\u0041"', b'"obfuscation":"a\tb"', b'"obfuscation":"a\nb"',
        b'"obfuscation":"a\xffb"',  # not UTF-8: the general path drops the frame
        b'"obfuscation":"a"',  # a quote cut: no tail after the value
    ]
    for value in refused[:-1]:
        frame = data.replace(member, value)
        assert template.match(frame) is None, value
        assert template.choices(frame) is None, value
        assert template.relay(b"data: " + frame + b"\n\n") is None, value
    cut = data.replace(member + b',"object"', refused[-1] + b'"object"')
    assert template.match(cut) is None and template.relay(b"data: " + cut + b"\n\n") is None
    unpadded = delta("x")[6:-2]
    assert template.match(unpadded) is None and template.choices(unpadded) is None


def test_no_padded_template_from_an_escaped_padding_or_one_before_the_model() -> None:
    data = padded(delta("x"), 'a"b')[6:-2]
    assert PaddedFrameTemplate.learn(data, orjson.loads(data), "m") is None
    before = orjson.loads(delta("x")[6:])
    reordered = {"choices": before.pop("choices"), "obfuscation": "k3Zr9", **before}
    data = orjson.dumps(reordered)
    assert PaddedFrameTemplate.learn(data, orjson.loads(data), "m") is None


def test_steady_relay_takes_padded_frames() -> None:
    # On main a gpt-5 stream's template never matched: every padded frame took feed()'s
    # general path (parsed, written again).
    frames = padded_stream(long_stream(annotate=False), ["k3Zr9", "Xy", "lRK2aBv", "0f4590e"])
    normalizer, steady = learned(frames)
    frames_in = normalizer.frames_in
    for frame in frames[3:-3]:
        relayed = steady(frame)
        assert relayed is not None, frame
        assert orjson.loads(relayed[6:]) == {**orjson.loads(frame[6:]), "model": "gpt-4o"}
    assert normalizer.frames_in == frames_in + len(frames) - 6
    assert steady(frames[-3]) is None  # the finish frame: feed() takes it


def test_the_emulators_gpt5_stream_is_relayed_by_the_fast_path() -> None:
    frames = gpt5_stream()
    for policy in POLICIES:
        assert relay_by_pieces(frames, policy) == relay(frames, policy, fast=False)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-5-mini"))
    taken = 0
    for frame in frames:
        steady = normalizer.steady_relay()
        if steady is not None and steady(frame) is not None:
            taken += 1
        else:
            normalizer.feed(frame)
    # All but the prompt filter's, the role, the first content frame, finish, usage, [DONE].
    assert taken == len(frames) - 6 > 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=12),
       st.lists(st.text(max_size=16), min_size=1, max_size=6), st.data())
def test_any_padding_and_any_split_give_the_general_paths_bytes(
        words: list[str], paddings: list[str], data: st.DataObject) -> None:
    frames = padded_stream(long_stream(words), paddings)
    pieces = cut_anywhere(frames, data)
    policy = data.draw(st.sampled_from(POLICIES))
    expected = relay(frames, policy, fast=False)
    assert relay(pieces, policy, fast=True) == expected
    assert relay_by_pieces(pieces, policy) == expected
    assert relay_by_pieces(frames, policy) == expected


def test_an_obfuscation_member_that_is_no_string_keeps_the_plain_template() -> None:
    # Not what Azure sends, but the same bytes in every frame: the template learned as
    # for any other member, as before `PaddedFrameTemplate`.
    model = f'"model":"{AZURE_MODEL}",'.encode()
    frames = [event.replace(model, model + b'"obfuscation":null,')
              for event in long_stream(annotate=False)]
    for policy in POLICIES:
        assert relay_by_pieces(frames, policy) == relay(frames, policy, fast=False)
    assert learned(frames)[1](frames[3]) is not None
