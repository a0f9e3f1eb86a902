"""The usual plain chat's reservation, read in one frame: `Gateway._usual_chat`'s body checks.

`usual_chat_tokens(json, default_completion)` is, for a chat body of the names
`PLAIN_CHAT_NAMES`, not stored, whose messages are each a `role` and a string `content`,
the tokens `_governed` would reserve (`request_estimate`'s sum, at least 1); -1 for any
other body (then `_governed` takes it). The names check, the message walk
(`plain_messages_chars`'s, inline) and the estimate's usual case are one call instead of
three (a Python call and its frame are ~300 instructions of a request's ~390,000:
tests/unit/test_govcut_usualchat.py holds it to the general functions).
"""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.gateway.affinity import MAX_REFERENCE_VALUES
from azure_openai_proxy.gateway.governed import PLAIN_CHAT_NAMES, request_estimate
from azure_openai_proxy.governance.estimate import text_length

__all__ = ["usual_chat_tokens"]


def usual_chat_tokens(json: dict[str, Any], default_completion: int) -> int:
    """The tokens a plain chat body reserves, or -1 when it is not one (module docstring)."""
    # `store: true` is a stored chat, the key's own: `_governed` records it.
    if not PLAIN_CHAT_NAMES.issuperset(json) or ("store" in json and json["store"] is True):
        return -1
    messages = json.get("messages")
    if type(messages) is not list or len(messages) > MAX_REFERENCE_VALUES:
        return -1
    chars = 0
    # As `plain_messages_chars`: a message of two names, `role` among them, is a role and
    # a content when it is a dict; its content a string when it has `isascii` (of parsed
    # JSON's other values none has); anything else raises, rarely.
    try:
        for message in messages:
            if len(message) != 2 or "role" not in message:
                return -1
            content = message["content"]
            chars += len(content) if content.isascii() else text_length(content)
    except (TypeError, KeyError, AttributeError):
        return -1
    most = json.get("max_tokens")
    if type(most) is int and most >= 0 and "max_completion_tokens" not in json:  # ONE_MAXIMUM
        tokens = -(-chars // 4) + most  # as `request_estimate` makes it
    else:
        tokens = sum(request_estimate(json, default_completion, "chat/completions", chars))
    return tokens or 1  # a model runs: 1 at least (`hold`)
