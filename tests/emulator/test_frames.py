from __future__ import annotations

import json
from dataclasses import replace

from azure_openai_proxy.emulator import frames
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import RequestFacts, plan_chat, plan_completions

GPT4O = EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat")
FACTS = RequestFacts(GPT4O, "abc", 1700000000, "prompt_filter_results", 10)


def body(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hi"}], **extra}


def test_chat_body_is_azure_shaped() -> None:
    out = frames.chat_body(plan_chat(body(), FACTS))
    assert out["object"] == "chat.completion" and out["model"] == "gpt-4o-2024-08-06"
    assert out["id"] == "chatcmpl-abc" and out["system_fingerprint"].startswith("fp_")
    assert out["prompt_filter_results"][0]["prompt_index"] == 0
    assert out["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False, "detected": False}
    choice = out["choices"][0]
    assert choice["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["completion_tokens"] == 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + 10


def test_stream_follows_section_4_in_order() -> None:
    plan = plan_chat(body(stream=True, stream_options={"include_usage": True}), FACTS)
    stream = frames.chat_stream(plan, 4)
    first = stream[0].data
    assert first == {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                     "prompt_filter_results": first["prompt_filter_results"]}
    role = stream[1].data
    assert role is not None
    assert role["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
    assert role["choices"][0]["content_filter_results"] == {}
    contents = stream[2:5]
    assert [f.tokens for f in contents] == [4, 4, 2]
    for frame in contents:
        assert frame.data is not None
        assert set(frame.data["choices"][0]["delta"]) == {"content"}
        assert frame.data["choices"][0]["content_filter_results"]["hate"]["filtered"] is False
    finish = stream[5].data
    assert finish is not None
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == "stop"
    usage = stream[6].data
    assert usage is not None and usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    assert stream[7].data is None and stream[7].encode() == b"data: [DONE]\n\n"
    assert len(stream) == 8
    text = "".join(f.data["choices"][0]["delta"]["content"] for f in contents if f.data)
    assert text == plan.choices[0].text


def test_no_usage_frame_without_include_usage_and_prompt_annotations_on_old_previews() -> None:
    plan = plan_chat(body(stream=True), replace(FACTS, filter_key="prompt_annotations"))
    stream = frames.chat_stream(plan, 4)
    assert stream[0].data is not None and "prompt_annotations" in stream[0].data
    assert all(f.data is None or "usage" not in f.data for f in stream)


def test_old_versions_have_no_filter_results() -> None:
    plan = plan_chat(body(stream=True), replace(FACTS, filter_key=None))
    stream = frames.chat_stream(plan, 4)
    assert stream[0].data is not None and stream[0].data["choices"][0]["delta"]["role"]
    assert "content_filter_results" not in stream[1].data["choices"][0]  # type: ignore[index]


def test_completion_filter_stream_ends_with_content_filter() -> None:
    plan = plan_chat(body(stream=True), FACTS)
    plan = plan_chat({"messages": [{"role": "user", "content": "TRIGGER_COMPLETION_FILTER"}]},
                     FACTS)
    stream = frames.chat_stream(plan, 2)
    finish = stream[-2].data
    assert finish is not None
    assert finish["choices"][0]["finish_reason"] == "content_filter"
    assert finish["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    assert frames.chat_body(plan)["choices"][0]["content_filter_results"]["violence"] == {
        "filtered": True, "severity": "medium"}


def test_async_filter_annotations_have_offsets_and_no_delta() -> None:
    deployment = replace(GPT4O, async_filter=True)
    plan = plan_chat(body(), replace(FACTS, deployment=deployment))
    stream = frames.chat_stream(plan, 4)
    annotations = [f.data for f in stream
                   if f.data and f.data["choices"] and "content_filter_offsets" in f.data["choices"][0]]
    assert len(annotations) == 3  # 10 tokens checked in spans of 4, 4, 2
    for note in annotations:
        assert note["id"] == "" and note["model"] == "" and note["created"] == 0
        assert "delta" not in note["choices"][0]
    offsets = [n["choices"][0]["content_filter_offsets"] for n in annotations]
    assert offsets[0]["start_offset"] == 0
    assert offsets[-1]["end_offset"] == len(plan.choices[0].text)
    assert offsets[1]["start_offset"] == offsets[0]["end_offset"]


def test_tool_call_stream_deltas_reassemble_arguments() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}}}}}]
    plan = plan_chat(body(tools=tools), FACTS)
    stream = frames.chat_stream(plan, 2)
    header = stream[1].data["choices"][0]["delta"]  # type: ignore[index]
    assert header["role"] == "assistant" and header["content"] is None
    call = header["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and call["id"].startswith("call_")
    pieces = [f.data["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
              for f in stream[2:-2] if f.data]
    assert json.loads("".join(pieces)) == json.loads(plan.choices[0].tool.arguments)  # type: ignore[union-attr]
    assert stream[-2].data["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    message = frames.chat_body(plan)["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["type"] == "function"


def test_completions_body_and_stream() -> None:
    plan = plan_completions({"prompt": "Say", "max_tokens": 6,
                             "stream_options": {"include_usage": True}}, FACTS)
    out = frames.completions_body(plan)
    assert out["object"] == "text_completion" and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"completion_tokens": 6, "prompt_tokens": 1, "total_tokens": 7}
    stream = frames.completions_stream(plan, 4)
    assert stream[0].data is not None and stream[0].data["choices"] == []
    texts = [f.data["choices"][0]["text"] for f in stream[1:3] if f.data]
    assert "".join(texts) == out["choices"][0]["text"]
    assert stream[3].data["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert stream[4].data["usage"]["total_tokens"] == 7  # type: ignore[index]
    assert stream[5].data is None


def test_stream_choices_keep_azures_sorted_key_order() -> None:
    # Azure sends each choice's keys sorted, content_filter_results first; the gateway's
    # steady-frame fast paths match that shape, so an emulator that put it last would
    # exercise only the general path in every e2e test and bench phase.
    chat = frames.chat_stream(plan_chat(body(stream=True), FACTS), 4)
    text = frames.completions_stream(plan_completions({"prompt": "hi", "stream": True}, FACTS), 4)
    for frame in chat + text:
        for choice in (frame.data or {}).get("choices", []):
            assert list(choice) == sorted(choice), list(choice)


def test_gpt5_chunks_carry_obfuscation_padding_unless_turned_off() -> None:
    """meilisearch#6341: Azure's gpt-5-mini role chunk goes `..."model":"gpt-5-mini-2025-08-07",
    "obfusc...` (keys sorted, the padding before `object`); OpenAI's stream_options document
    `include_obfuscation` (default true) for the padding. Azure's own frames (the prompt
    filter's) and the usage frame carry none; older models' chunks none either."""
    gpt5 = replace(FACTS, deployment=EmulatedDeployment("g", "gpt-5-mini-2025-08-07", "chat"))
    stream = frames.chat_stream(plan_chat(body(stream=True, stream_options={
        "include_usage": True}), gpt5), 4)
    chunks = [f.data for f in stream[1:-2]]
    assert chunks and all(c is not None and c["choices"] for c in chunks)
    for chunk in chunks:
        assert chunk is not None
        assert list(chunk)[3:6] == ["model", "obfuscation", "object"], list(chunk)
        padding = chunk["obfuscation"]
        assert isinstance(padding, str) and 1 <= len(padding) <= 16
    assert "obfuscation" not in (stream[0].data or {}) and "obfuscation" not in (stream[-2].data or {})
    off = frames.chat_stream(plan_chat(body(stream=True, stream_options={
        "include_obfuscation": False}), gpt5), 4)
    assert not any("obfuscation" in (f.data or {}) for f in off)
    assert not any("obfuscation" in (f.data or {})
                   for f in frames.chat_stream(plan_chat(body(stream=True), FACTS), 4))
