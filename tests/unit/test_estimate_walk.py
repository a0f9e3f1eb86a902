"""`_text_length`, the estimate's walk of a prompt field, against a plain recursive
reading of its rule on random JSON (hypothesis): whatever the body (deep, wide, odd
types where strings are expected), the same count, and never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.governed import request_estimate
from azure_openai_proxy.governance.estimate import (
    _IMAGE_PARTS,
    _NOT_TEXT,
    CHARS_PER_TOKEN,
    _image_chars,
    _text_length,
    estimated_usage,
    unanswered_usage,
)

_NAMES = st.sampled_from(["role", "content", "type", "text", "image_url", "input_image",
                          "id", "result", "arguments", "output", "detail", "logprobs",
                          "x", "image_generation_call", "summary"])
_LEAVES = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=8) | _NAMES)
_JSON = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=5)
                     | st.dictionaries(_NAMES, inner, max_size=5), max_leaves=40)


def _reference(value: Any, in_object: bool = False) -> int:
    if isinstance(value, str):  # its UTF-8 bytes (ASCII: its characters)
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list):
        return sum(_reference(item, in_object) for item in value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        image = _image_chars(value) if isinstance(kind, str) and kind in _IMAGE_PARTS else 0
        return image + sum(_reference(inner, True) for name, inner in value.items()
                           if name not in _NOT_TEXT)
    # a token id outside any object; inside one, a number is not text
    return CHARS_PER_TOKEN if type(value) is int and not in_object else 0


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_the_walk_counts_as_its_rule_says(value: Any) -> None:
    assert _text_length(value) == _reference(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["messages", "input", "prompt", "instructions",
                                        "max_tokens", "n", "tools", "text", "model",
                                        "max_output_tokens", "previous_response_id"]),
                       _JSON, max_size=6),
       st.sampled_from(["chat/completions", "responses", "completions", "embeddings"]))
def test_the_estimates_take_any_json_body(body: dict[str, Any], operation: str) -> None:
    prompt, most = request_estimate(body, 1024, operation)
    assert prompt >= 0 and most >= 0
    assert estimated_usage(body, 3)["completion_tokens"] == 1
    unanswered_usage(body, operation, stream=False)


def test_a_deep_or_wide_prompt_is_counted_whole() -> None:
    deep: Any = "abcd"
    for _ in range(5000):
        deep = [{"content": deep, "x": None}]
    assert _text_length(deep) == 4
    assert _text_length([list(range(100_000))]) == 100_000 * CHARS_PER_TOKEN
