"""The text a model reads besides the prompt (tool and function definitions, a response
format's schema, a predicted output) and image parts count toward a request's estimate
before it goes out: counted only after the answer, a 40 KB tool description with
`max_tokens: 1` passed a 2,000 TPM key again and again (the review of govpath measured
70,007 tokens through in ten minutes against 20,000)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from azure_openai_proxy.gateway.governed import (
    PLAIN_CHAT_NAMES,
    plain_chat_chars,
    request_estimate,
)
from azure_openai_proxy.governance.estimate import (
    IMAGE_TOKENS,
    SCHEMA_FIELDS,
    estimate_tokens,
    estimated_usage,
    prompt_tokens,
)
from tests.unit.test_output_maximum import _statuses

_HI = [{"role": "user", "content": "hi"}]
_BIG_TOOL = [{"type": "function", "function": {
    "name": "lookup", "description": "x" * 40_000,
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


@pytest.mark.parametrize("name, value", [
    ("tools", _BIG_TOOL),
    ("functions", [_BIG_TOOL[0]["function"]]),
    ("response_format", {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object", "description": "x" * 40_000}}}),
    ("prediction", {"type": "content", "content": "x" * 40_000}),
    ("text", {"format": {"type": "json_schema", "description": "x" * 40_000}}),
])
def test_a_schema_the_model_reads_is_counted_before_the_answer(name: str,
                                                               value: Any) -> None:
    plain = {"model": "gpt-4o", "messages": _HI, "max_tokens": 1}
    body = {**plain, name: value}
    assert prompt_tokens(body) >= 10_000 > prompt_tokens(plain)
    assert estimate_tokens(body) >= 10_000
    assert plain_chat_chars(body) == -1  # not the short path's messages-only count
    assert sum(request_estimate(body, 1024, "chat/completions")) >= 10_000


def test_the_short_path_never_takes_a_body_with_a_schema() -> None:
    assert SCHEMA_FIELDS.isdisjoint(PLAIN_CHAT_NAMES)


def test_an_image_part_counts_as_a_picture_not_as_nothing() -> None:
    def body(*parts: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it"}, *parts]}]}

    text_only = prompt_tokens(body())
    url = {"url": "https://example.com/cat.png"}
    assert prompt_tokens(body({"type": "image_url", "image_url": url})) == (
        text_only + IMAGE_TOKENS)
    low = {"type": "image_url", "image_url": {**url, "detail": "low"}}
    assert prompt_tokens(body(low, low)) == text_only + 2 * 85
    # the Responses API's spelling
    responses = {"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is it"},
        {"type": "input_image", "image_url": url["url"], "detail": "high"}]}]}
    assert prompt_tokens(responses) == text_only + IMAGE_TOKENS


def test_a_tool_description_past_the_minute_is_refused_before_azure() -> None:
    # 40,000 characters of tool description: ~10,000 tokens against a 2,000 TPM key.
    body = {"model": "gpt-4o", "messages": _HI, "max_tokens": 1, "tools": _BIG_TOOL}
    assert asyncio.run(_statuses(body)) == [(429, 0)] * 4
    # the same key takes a small tool (control: the refusal is the schema's size)
    small = {**body, "tools": [{"type": "function", "function": {"name": "lookup"}}]}
    assert asyncio.run(_statuses(small)) == [(200, 1)] * 4


def test_a_part_whose_type_is_not_a_string_is_estimated_not_a_500() -> None:
    # `item.get("type") in frozenset` raised TypeError (unhashable) for a list or dict
    chat = {"messages": [{"role": "user", "content": [{"type": ["x"], "text": "hi"}]}],
            "max_tokens": 1}
    assert prompt_tokens(chat) == 1
    assert asyncio.run(_statuses({"model": "gpt-4o", **chat})) == [(200, 1)] * 4
    assert prompt_tokens({"input": [{"type": {"a": 1}}]}) == 0


def test_a_description_nested_deep_in_a_schema_is_counted_whole() -> None:
    schema: dict[str, Any] = {"type": "string", "description": "x" * 40_000}
    for _ in range(60):  # deeper than any fixed cap short of the parser's
        schema = {"type": "object", "properties": {"p": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    assert prompt_tokens({"messages": _HI, "tools": tools}) >= 10_000


def test_text_beside_an_image_part_is_counted_too() -> None:
    hidden = {"messages": [{"role": "user", "type": "image_url", "content": "x" * 40_000}]}
    assert prompt_tokens(hidden) >= 10_000 + IMAGE_TOKENS


def test_a_stream_left_before_its_usage_is_settled_with_its_schemas_and_images() -> None:
    # the estimate a broken or abandoned stream is recorded and settled with: counting
    # only messages' text gave back the tools' and image's reserved tokens (5 of 10,781)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                     image]}], "tools": _BIG_TOOL}
    usage = estimated_usage(body, 0)
    assert usage["prompt_tokens"] >= 10_000 + IMAGE_TOKENS
    assert usage["prompt_tokens"] >= prompt_tokens(body)
