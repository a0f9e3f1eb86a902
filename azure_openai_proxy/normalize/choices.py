"""What the stream normalizer (`stream.py`) reads in a frame's choices, as plain
functions over parsed JSON: the generated text a choice carries (the ledger's estimate
for a stream that ends before Azure's usage frame), whether a choice is an async-filter
annotation and whether its verdict blocks the text, Azure's own filter fields, and the
error event a stream ends with when it must (`closing_error`)."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.errors import error_body
from azure_openai_proxy.governance.estimate import text_length

__all__ = [
    "CHOICE_FILTER_KEYS",
    "CONTENT_FILTER_MESSAGE",
    "PROMPT_FILTER_KEYS",
    "blocking_verdict",
    "choice_chars",
    "closing_error",
    "is_annotation",
    "strip_azure_fields",
]

CONTENT_FILTER_MESSAGE = (
    "The response was filtered due to the content triggering Azure OpenAI's content management policy."
)
PROMPT_FILTER_KEYS = ("prompt_filter_results", "prompt_annotations")
CHOICE_FILTER_KEYS = ("content_filter_results", "content_filter_offsets")
# A delta with no other keys carries no text besides `content`: the role frame's
# `{"content":"","role":"assistant"}` and the finish frame's `{}` (one set test instead
# of `_other_delta_chars`' six look-ups, once per stream each).
_NO_OTHER_TEXT = frozenset({"content", "role"})


def choice_chars(choice: dict[str, Any]) -> int:
    """Characters of generated text a choice carries (chat's delta content, refusal,
    reasoning and tool-call arguments, or a legacy choice's text), as the prompt's are
    counted (`text_length`: UTF-8 bytes outside ASCII): a running count, from the frame
    already parsed."""
    delta = choice.get("delta")
    if type(delta) is dict:
        content = delta.get("content")
        chars = text_length(content) if type(content) is str else 0
        if (len(delta) > 1 or content is None) and not _NO_OTHER_TEXT.issuperset(delta):
            chars += _other_delta_chars(delta)  # (a plain content delta has one field)
        return chars
    text = choice.get("text")
    return text_length(text) if type(text) is str else 0


def _other_delta_chars(delta: dict[str, Any]) -> int:
    """Characters of a delta's generated text besides `content`: Azure bills them as
    completion tokens too, so an abandoned tool-call stream is not estimated at zero."""
    chars = 0
    for key in ("refusal", "reasoning_content"):
        value = delta.get(key)
        if type(value) is str:
            chars += text_length(value)
    calls = delta.get("tool_calls")
    if type(calls) is list:
        for call in calls:
            function = call.get("function") if type(call) is dict else None
            if type(function) is dict:
                chars += _function_chars(function)
    function = delta.get("function_call")  # the legacy functions API
    if type(function) is dict:
        chars += _function_chars(function)
    return chars


def _function_chars(function: dict[str, Any]) -> int:
    chars = 0
    for key in ("name", "arguments"):
        value = function.get(key)
        if type(value) is str:
            chars += text_length(value)
    return chars


def is_annotation(choice: dict[str, Any]) -> bool:
    """An async-filter annotation: no delta/text and no finish_reason, only filter data."""
    return "delta" not in choice and "text" not in choice and choice.get("finish_reason") is None


def blocking_verdict(choices: list[Any]) -> dict[str, Any] | None:
    """The `content_filter_results` of an annotation choice that says the text was
    filtered (`{"filtered": true, ...}` in a category, or in a list such as
    `custom_blocklists`), else None."""
    for choice in choices:
        if type(choice) is not dict or not is_annotation(choice):
            continue
        results = choice.get("content_filter_results")
        if type(results) is dict and any(_filtered(value) for value in results.values()):
            return results
    return None


def _filtered(value: Any) -> bool:
    if type(value) is list:
        return any(type(item) is dict and item.get("filtered") is True for item in value)
    return type(value) is dict and value.get("filtered") is True


def strip_azure_fields(obj: dict[str, Any], choices: list[dict[str, Any]]) -> bool:
    changed = False
    for key in PROMPT_FILTER_KEYS:
        if key in obj:
            del obj[key]
            changed = True
    for choice in choices:
        for key in CHOICE_FILTER_KEYS:
            if key in choice:
                del choice[key]
                changed = True
    return changed


def closing_error(policy: Any, filter_result: Any, blocked: bool, cut: bool,
                  reason: str | None) -> dict[str, Any] | None:
    """The error event a chat stream ends with (`ChatStreamNormalizer`'s close), if any:
    `code: "content_filter"` if `blocked` (a choice finished with `content_filter`, or an
    async-filter annotation's verdict says `filtered: true`, what Azure sends for a block
    found after the model's stop) and `policy.error_on_content_filter`, with Azure's
    `filter_result` when its fields are kept; else, if the stream was `cut` (no
    `[DONE]`), `type: "server_error"`, `code: "stream_interrupted"`, with the `reason`."""
    if policy.error_on_content_filter and blocked:
        extra: dict[str, Any] = {}
        if policy.keep_azure_fields and filter_result:
            extra["content_filter_result"] = filter_result
        return error_body(CONTENT_FILTER_MESSAGE, "invalid_request_error", "content_filter", **extra)
    if not cut:
        return None
    if reason:
        message = f"The Azure OpenAI stream failed before it completed: {reason}"
    else:
        message = "The Azure OpenAI stream ended before it completed (no [DONE] received)."
    return error_body(message, "server_error", "stream_interrupted")
