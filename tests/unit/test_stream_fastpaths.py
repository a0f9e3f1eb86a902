"""The stream normalizer's fast paths (steady content frames, the async filter's
annotation frames dropped by a learned template, `[DONE]` without an SseEvent) against
its general path (`fast=False`) on generated frame sequences: annotations that carry
something more than offsets (a delta, text, a finish, usage, prompt filter results, an
error, another choice or index, a blocking or detecting verdict, other key orders and
spellings) must come out exactly as the general path writes them; and on the emulator's
streams (n > 1, tool and function calls, legacy completions, the async filter, a filtered
finish, each api-version's filter key), however the bytes are split into reads."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.emulator import frames as emulator_frames
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import RequestFacts, plan_chat, plan_completions
from azure_openai_proxy.emulator.textgen import TRIGGER_COMPLETION_FILTER
from azure_openai_proxy.normalize import steady
from tests.unit.test_stream_normalizer import (
    DONE,
    FILTERS,
    PROMPT_FILTERS,
    USAGE,
    async_annotation,
    chunk,
    delta,
    finish_frame,
    frame,
    prompt_frame,
    role_frame,
    usage_frame,
)
from tests.unit.test_stream_steady import POLICIES, relay

_OFFSETS = st.one_of(
    st.fixed_dictionaries({"check_offset": st.integers(0, 10**6),
                           "start_offset": st.integers(0, 10**6),
                           "end_offset": st.integers(0, 10**6)}),
    st.dictionaries(st.text(max_size=4), st.one_of(st.integers(-2**63, 2**63 - 1),
                                                    st.text(max_size=6),
                                                    st.lists(st.integers(0, 99), max_size=2)),
                    max_size=3),
)
_RESULTS = st.sampled_from([
    FILTERS,
    {},
    {**FILTERS, "hate": {"filtered": False, "severity": "low"}},
    {**FILTERS, "violence": {"filtered": True, "severity": "medium"}},
    {"custom_blocklists": [{"filtered": True, "id": "words"}]},
    {"custom_blocklists": [{"filtered": False, "id": "words"}]},
    {"protected_material_text": {"detected": True, "filtered": False}},
])
_CHOICE_EXTRA = st.sampled_from([
    {}, {}, {}, {"delta": {}}, {"delta": {"content": "x"}}, {"text": "x"},
    {"finish_reason": "content_filter"}, {"finish_reason": "stop"}, {"logprobs": None},
])
_TOP_EXTRA = st.sampled_from([
    {}, {}, {}, {"usage": USAGE}, {"prompt_filter_results": PROMPT_FILTERS},
    {"error": {"message": "x"}}, {"error": None}, {"id": "chatcmpl-other"},
    {"system_fingerprint": "fp_x"},
])


@st.composite
def annotations(draw: st.DrawFn) -> bytes:
    """An async-filter annotation frame, usually Azure's, sometimes carrying more."""
    choice: dict[str, Any] = {"content_filter_offsets": draw(_OFFSETS),
                              "content_filter_results": draw(_RESULTS),
                              "finish_reason": None, "index": draw(st.sampled_from([0, 0, 1]))}
    if draw(st.booleans()):  # results before offsets: another key order
        choice = {"content_filter_results": choice.pop("content_filter_results"), **choice}
    choice.update(draw(_CHOICE_EXTRA))
    choices = [choice]
    if draw(st.integers(0, 9)) == 0:
        choices.append({**choice, "index": 1})
    obj = {"choices": choices, "created": 0, "id": "", "model": "", "object": "",
           **draw(_TOP_EXTRA)}
    out = frame(obj)
    spelling = draw(st.integers(0, 9))
    if spelling == 0:  # spaced: not orjson's form
        out = out.replace(b'"index":', b'"index": ')
    elif spelling == 1:  # a repeated member, which a parse keeps the last of
        out = out.replace(b'"index":0', b'"index":0,"index":1')
    elif spelling == 2:  # an offset orjson cannot read (past 64 bits): the frame is dropped
        out = out.replace(b'"check_offset":', b'"check_offset":1' + b"0" * 20 + b",\"c\":")
    return out


def content_frames() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda text, filters: delta(text, filters=filters),
                  st.text(max_size=8), st.sampled_from([FILTERS, {}])),
        st.builds(lambda text: chunk({"content_filter_results": {}, "delta": {"content": text},
                                      "finish_reason": None, "index": 1, "logprobs": None}),
                  st.text(max_size=4)),
        st.sampled_from([finish_frame("stop"), finish_frame("content_filter"), usage_frame(),
                         prompt_frame(), b": keep-alive\n\n",
                         async_annotation(0, 0, 4), async_annotation(4, 4, 9)]),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(annotations(), content_frames()), max_size=14), st.booleans(),
       st.sampled_from(POLICIES), st.data())
def test_generated_annotation_and_content_frames_come_out_as_the_general_paths(
        middle: list[bytes], done: bool, policy: Any, data: st.DataObject) -> None:
    # The first annotation is Azure's own, after the first content frames: both
    # templates are learned before the generated frames arrive.
    frames = [prompt_frame(), role_frame(), delta("a"), delta("b"), async_annotation(0, 0, 2),
              *middle, *([DONE] if done else [])]
    expected = relay(frames, policy, fast=False)
    assert relay(frames, policy, fast=True) == expected
    whole = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    reads = [whole[a:b] for a, b in itertools.pairwise([0, *cuts, len(whole)])]
    assert relay(reads, policy, fast=True) == expected
    per_read = data.draw(st.integers(2, 5))  # several whole frames per read
    grouped = [b"".join(frames[i:i + per_read]) for i in range(0, len(frames), per_read)]
    assert relay(grouped, policy, fast=True) == expected


_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}]


def _emulator_stream(*, async_filter: bool, filter_key: str | None, n: int, kind: str,
                     usage: bool, blocked: bool) -> list[bytes]:
    deployment = EmulatedDeployment("chat", "gpt-4o-2024-08-06", "chat", async_filter=async_filter)
    facts = RequestFacts(deployment, "r3c0rded", 1727000000, filter_key, 12)
    prompt = "What is the capital of France?" + (f" {TRIGGER_COMPLETION_FILTER}" if blocked else "")
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "n": n,
                            "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    if kind == "tools":
        body.update(tools=_TOOLS, tool_choice="required")
    elif kind == "functions":
        body.update(functions=[_TOOLS[0]["function"]], function_call={"name": "get_weather"})
    if kind == "legacy":
        stream = emulator_frames.completions_stream(
            plan_completions({"prompt": prompt, "n": n, "stream": True}, facts), 2)
    else:
        stream = emulator_frames.chat_stream(plan_chat(body, facts), 2)
    return [f.encode() for f in stream]


def _sorted_keys(frames: list[bytes]) -> list[bytes]:
    """Azure writes a frame's keys sorted (section 4); the emulator's own order puts a
    choice's `content_filter_results` last, which no fast path learns from."""
    return [f if f == DONE else
            b"data: " + orjson.dumps(orjson.loads(f[6:-2]), option=orjson.OPT_SORT_KEYS) + b"\n\n"
            for f in frames]


@pytest.mark.parametrize("async_filter", [False, True])
@pytest.mark.parametrize("kind", ["text", "tools", "functions", "legacy"])
def test_the_emulators_streams_come_out_as_the_general_paths(async_filter: bool, kind: str) -> None:
    for filter_key, n, usage, blocked in itertools.product(
            [None, "prompt_annotations", "prompt_filter_results"], [1, 3], [False, True],
            [False, True]):
        stream = _emulator_stream(async_filter=async_filter, filter_key=filter_key, n=n,
                                  kind=kind, usage=usage, blocked=blocked)
        for frames in (stream, _sorted_keys(stream)):
            whole = b"".join(frames)
            for policy in POLICIES:
                expected = relay(frames, policy, fast=False)
                for reads in (frames, [whole], [whole[:len(whole) // 3], whole[len(whole) // 3:]]):
                    assert relay(reads, policy, fast=True) == expected


def test_the_emulators_async_filter_stream_takes_the_annotation_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison above is not vacuous: on Azure's key order the template drops most
    # of the annotations.
    matched: list[bool] = []
    matches = steady.AnnotationFrameTemplate.matches

    def counted(self: steady.AnnotationFrameTemplate, data: bytes) -> bool:
        matched.append(matches(self, data))
        return matched[-1]

    monkeypatch.setattr(steady.AnnotationFrameTemplate, "matches", counted)
    frames = _sorted_keys(_emulator_stream(async_filter=True, filter_key="prompt_filter_results",
                                           n=1, kind="text", usage=True, blocked=False))
    relay(frames, POLICIES[0], fast=True)
    annotations = sum(b"content_filter_offsets" in f for f in frames)
    # All of them: the first teaches the template from its bytes (`from_bytes`).
    assert annotations >= 3 and matched.count(True) == annotations
