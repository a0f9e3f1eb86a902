from __future__ import annotations

import json

import pytest

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.responses_api import (
    input_text,
    plan_response,
    response_events,
    response_object,
)

GPT4O = EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat")
O3 = EmulatedDeployment("o3-mini", "o3-mini-2025-01-31", "chat")


def test_input_text_from_strings_and_items() -> None:
    assert input_text({"input": "hi", "instructions": "be brief"}) == "be brief\nhi"
    items = [{"role": "user", "content": [{"type": "input_text", "text": "a"}]},
             {"type": "function_call_output", "output": "42"}]
    assert input_text({"input": items}) == "a\n42"


def test_completed_response_object() -> None:
    plan = plan_response({"input": "hi"}, GPT4O, "resp_1", 5, 10)
    body = response_object(plan)
    assert body["status"] == "completed" and body["model"] == "gpt-4o-2024-08-06"
    message = body["output"][0]
    assert message["type"] == "message" and message["id"] == "msg_1"
    assert message["content"][0]["text"] == "".join(plan.tokens)
    assert body["usage"]["output_tokens"] == 10
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + 10


def test_max_output_tokens_and_completion_trigger_make_it_incomplete() -> None:
    cut = response_object(plan_response({"input": "hi", "max_output_tokens": 3}, GPT4O, "r", 0, 10))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    filtered = plan_response({"input": "TRIGGER_COMPLETION_FILTER"}, GPT4O, "r", 0, 10)
    assert response_object(filtered)["incomplete_details"] == {"reason": "content_filter"}
    with pytest.raises(wire_errors.AzureError):
        plan_response({"input": "TRIGGER_PROMPT_FILTER"}, GPT4O, "r", 0, 10)


def test_event_sequence_for_text() -> None:
    plan = plan_response({"input": "hi"}, GPT4O, "resp_1", 0, 10)
    events = [e for e, _ in response_events(plan, 4)]
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[-1]["response"]["status"] == "completed"


def test_reasoning_item_and_function_call() -> None:
    plan = plan_response({"input": "hi"}, O3, "resp_2", 0, 10)
    assert response_object(plan)["output"][0] == {"id": "rs_2", "type": "reasoning", "summary": []}
    tools = [{"type": "function", "name": "f", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}]
    call_plan = plan_response({"input": "hi", "tools": tools}, GPT4O, "resp_3", 0, 10)
    item = response_object(call_plan)["output"][0]
    assert item["type"] == "function_call" and item["name"] == "f"
    assert "q" in json.loads(item["arguments"])
    kinds = [e["type"] for e, _ in response_events(call_plan, 4)]
    assert "response.function_call_arguments.done" in kinds
    assert "response.output_text.delta" not in kinds
