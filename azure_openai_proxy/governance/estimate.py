"""Token estimates, for the requests Azure's usage never reached: a stream the client left,
or that broke, before the usage frame.

About four characters a token (OpenAI's rule of thumb for English), rounded up, so a
request that carried any text is never estimated at zero. Cheap on purpose: the stream
relay keeps only a running count of the content characters it relayed, and the prompt is
measured only when an estimate is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "estimated_usage", "prompt_chars", "tokens_for_chars"]

CHARS_PER_TOKEN = 4
# Per message, the chat format adds a few tokens of its own (role, separators).
_MESSAGE_OVERHEAD_TOKENS = 4


def tokens_for_chars(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN) if chars > 0 else 0


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of the text in a message's content (a string, or content parts)."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:
        return 0
    if isinstance(value, list):
        return sum(_text_chars(part, depth + 1) for part in value)
    if isinstance(value, dict):
        return sum(_text_chars(value[key], depth + 1)
                   for key in ("text", "content", "arguments", "input") if key in value)
    return 0


def prompt_chars(body: Mapping[str, Any] | None) -> tuple[int, int]:
    """(characters of prompt text, number of messages) in a chat, completions or
    Responses request body."""
    if not body:
        return 0, 0
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(_text_chars(m) for m in messages), len(messages)
    for key in ("prompt", "input"):
        if key in body:
            return _text_chars(body[key]), 0
    return 0, 0


def estimated_usage(body: Mapping[str, Any] | None, completion_chars: int) -> dict[str, Any]:
    """A usage object (chat's shape) estimated from the request and the characters of
    content relayed, marked `"estimated": True`."""
    chars, messages = prompt_chars(body)
    prompt = tokens_for_chars(chars) + messages * _MESSAGE_OVERHEAD_TOKENS
    completion = tokens_for_chars(completion_chars)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "estimated": True}
