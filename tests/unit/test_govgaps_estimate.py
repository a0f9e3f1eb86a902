"""The estimate's reading of a Responses body (review of issue 13): a stored prompt
(`prompt`, a template reference) beside `instructions` and `input`, and the numbers a
Responses item carries (indexes, coordinates), which are not text."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.gateway.governed import request_estimate
from azure_openai_proxy.governance.estimate import (
    CHARS_PER_TOKEN,
    _text_length,
    estimate_tokens,
    estimated_usage,
    prompt_chars,
    prompt_tokens,
    unanswered_usage,
)

TEMPLATE: Any = {"id": "pmpt_abc", "version": "2", "variables": {"city": "Paris"}}


def test_a_stored_prompt_adds_to_the_instructions_and_the_input() -> None:
    body = {"model": "gpt-4o", "prompt": TEMPLATE, "instructions": "i" * 400,
            "input": "x" * 800}
    # the template's variables (5 characters) and version (1), the instructions, the input
    chars = 6 + 400 + 800
    assert prompt_chars(body) == (chars, 0)
    assert prompt_tokens(body) == -(-chars // CHARS_PER_TOKEN)
    usage = estimated_usage(body, 0)
    assert usage["prompt_tokens"] == prompt_tokens(body)
    unanswered = unanswered_usage(body, "responses", stream=True)
    assert unanswered is not None and unanswered["prompt_tokens"] == prompt_tokens(body)
    assert request_estimate(body, 0, "responses")[0] == prompt_tokens(body)


def test_instructions_count_without_a_stored_prompt_too() -> None:
    body = {"instructions": "i" * 400, "input": "x" * 800}
    assert prompt_chars(body) == (1200, 0)
    assert estimated_usage(body, 0)["prompt_tokens"] == 300


def test_a_completions_prompt_is_still_its_text_or_its_token_ids() -> None:
    assert prompt_chars({"prompt": "abcdefgh"}) == (8, 0)
    assert prompt_chars({"prompt": [1, 2, 3]}) == (3 * CHARS_PER_TOKEN, 0)
    assert prompt_chars({"input": [[1, 2], [3]]}) == (3 * CHARS_PER_TOKEN, 0)  # embeddings


def test_the_numbers_of_a_responses_item_are_not_text() -> None:
    items: Any = [
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "abcd", "annotations": [
                {"type": "url_citation", "start_index": 0, "end_index": 4,
                 "url": "https://example.com", "title": "ex"}]}]},
        {"type": "computer_call", "call_id": "c1", "action": {
            "type": "click", "x": 100, "y": 200, "button": "left", "path": [[1, 2], [3, 4]]}},
        {"type": "reasoning", "summary": [], "output_index": 3, "content_index": 0},
    ]
    # the text alone: "abcd", "ex", "click" is a type, "left"
    assert _text_length(items) == 4 + 2 + 4
    body = {"input": items}
    assert prompt_tokens(body) == -(-10 // CHARS_PER_TOKEN)
    assert estimate_tokens(body, 0, "responses") == prompt_tokens(body)
    assert request_estimate(body, 0, "responses") == (prompt_tokens(body), 0)


def test_token_ids_outside_any_object_still_count() -> None:
    assert _text_length([1, 2, 3]) == 3 * CHARS_PER_TOKEN
    assert _text_length([[1, 2], [3, [4]]]) == 4 * CHARS_PER_TOKEN
    assert _text_length(7) == CHARS_PER_TOKEN
    assert _text_length([True, 1.5, None]) == 0
