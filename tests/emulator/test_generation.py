from __future__ import annotations

import json

import pytest

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import (
    RequestFacts,
    plan_chat,
    plan_completions,
    prompt_list,
)

GPT4O = EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat")
O3 = EmulatedDeployment("o3-mini", "o3-mini-2025-01-31", "chat")
FACTS = RequestFacts(GPT4O, "abc", 1700000000, "prompt_filter_results", 16)


def chat(text: str = "hi", **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_natural_length_stops_and_max_tokens_cuts() -> None:
    plan = plan_chat(chat(), FACTS)
    assert plan.choices[0].finish_reason == "stop" and len(plan.choices[0].tokens) == 16
    cut = plan_chat(chat(max_tokens=5), FACTS)
    assert cut.choices[0].finish_reason == "length" and cut.completion_tokens == 5
    cut2 = plan_chat(chat(max_completion_tokens=3), FACTS)
    assert cut2.completion_tokens == 3


def test_seed_and_n_make_distinct_deterministic_choices() -> None:
    plan = plan_chat(chat(n=2, seed=4), FACTS)
    assert [c.index for c in plan.choices] == [0, 1]
    assert plan.choices[0].text != plan.choices[1].text
    assert plan_chat(chat(n=2, seed=4), FACTS).choices[1].text == plan.choices[1].text
    assert plan_chat(chat(seed=5), FACTS).choices[0].text != plan.choices[0].text


def test_prompt_trigger_raises_content_filter() -> None:
    with pytest.raises(wire_errors.AzureError) as caught:
        plan_chat(chat("please TRIGGER_PROMPT_FILTER now"), FACTS)
    assert caught.value.body["error"]["code"] == "content_filter"


def test_completion_trigger_cuts_with_content_filter() -> None:
    plan = plan_chat(chat("TRIGGER_COMPLETION_FILTER"), FACTS)
    assert plan.choices[0].finish_reason == "content_filter"
    assert 0 < len(plan.choices[0].tokens) < 16


def test_reasoning_tokens_count_against_max_completion_tokens() -> None:
    facts = RequestFacts(O3, "abc", 1, "prompt_filter_results", 16)
    plan = plan_chat(chat(), facts)
    assert plan.reasoning_tokens == 16 and plan.completion_tokens == 32
    small = plan_chat(chat(max_completion_tokens=20), facts)
    assert small.reasoning_tokens == 16 and len(small.choices[0].tokens) == 4
    assert small.choices[0].finish_reason == "length" and small.completion_tokens == 20
    low = plan_chat(chat(reasoning_effort="low"), facts)
    assert low.reasoning_tokens == 8


def test_tools_produce_a_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}}}}]
    plan = plan_chat(chat(tools=tools), FACTS)
    choice = plan.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.tool is not None
    assert json.loads(choice.tool.arguments) == {"x": 1}
    assert plan_chat(chat(tools=tools, tool_choice="none"), FACTS).choices[0].tool is None


def test_json_modes_produce_json() -> None:
    plan = plan_chat(chat(response_format={"type": "json_object"}), FACTS)
    assert "answer" in json.loads(plan.choices[0].text)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    assert json.loads(plan_chat(chat(response_format=fmt), FACTS).choices[0].text) == {"n": 1}


def test_prompt_tokens_are_stable() -> None:
    assert plan_chat(chat("one two three"), FACTS).prompt_tokens == 3 + 3 + 3
    assert plan_chat(chat("one two three"), FACTS).prompt_tokens == 9


def test_completions_default_max_tokens_is_16_and_lists_of_prompts() -> None:
    facts = RequestFacts(GPT4O, "abc", 1, "prompt_filter_results", 40)
    plan = plan_completions({"prompt": "Say"}, facts)
    assert plan.choices[0].finish_reason == "length" and len(plan.choices[0].tokens) == 16
    many = plan_completions({"prompt": ["a", "b"], "n": 2, "max_tokens": 100}, facts)
    assert [c.index for c in many.choices] == [0, 1, 2, 3] and many.prompt_count == 2
    assert many.choices[0].finish_reason == "stop"


def test_prompt_list_forms() -> None:
    assert prompt_list("a b") == [("a b", 2)]
    assert prompt_list([1, 2, 3]) == [("1 2 3", 3)]
    assert prompt_list([[1, 2], "x"]) == [("1 2", 2), ("x", 1)]
    with pytest.raises(wire_errors.AzureError):
        prompt_list([{"a": 1}])
    with pytest.raises(wire_errors.AzureError):
        prompt_list([])
