"""A chained Responses turn reads its predecessor's whole context: what it reserves.

A request naming `previous_response_id` (or a `conversation`) is billed by Azure for the previous response's
input and output again (they are this turn's context), though its body carries only the
new input: its TPM reservation and budget hold counted the new input alone, so a long
conversation passed a key's minute again and again, each turn settled after the fact
(its debt floored at one minute's limit), as the uncounted tool schemas did before.

The tokens of each response a key made (its usage's input and output) are kept here
by its id when its answer or stream ends (`ObjectOwners`, gateway/ownership.py), and a
turn naming it adds them to its estimate; a conversation holds what its last turn's
did (less its reasoning, which the next turn does not read). Per worker, in a bounded table: a turn whose
predecessor another worker answered (or long ago) reserves its new input alone, as
before; Azure's usage still settles it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.boundedcache import BoundedCache

__all__ = ["ChainedContext"]

_CAPACITY = 16_384  # response ids (about 40 bytes each)


class ChainedContext:
    """response id -> the tokens a turn chained to it reads again."""

    def __init__(self, capacity: int = _CAPACITY) -> None:
        self._tokens: BoundedCache[str, int] = BoundedCache(capacity)

    def note(self, response_id: str, usage: Mapping[str, Any] | None,
             body: Mapping[str, Any] | None = None) -> None:
        """The response `response_id` ended with `usage` (Azure's, or an estimate); made
        from `body`, its request: the conversation it names holds as much after it."""
        if not usage:
            return
        total = 0
        for names in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
            for name in names:
                count = usage.get(name)
                if type(count) is int and count > 0:
                    total += count
                    break
        total -= min(_reasoning(usage), total)
        if total:
            self._tokens.put(response_id, total)
            conversation = _conversation(body)
            if conversation is not None:
                self._tokens.put(conversation, total)

    def tokens(self, body: Mapping[str, Any] | None) -> int:
        """The context tokens a Responses request body's `previous_response_id` or
        `conversation` names (0: none, or not known to this worker)."""
        if body is None:
            return 0
        previous = body.get("previous_response_id")
        tokens = self._tokens.get(previous) or 0 if type(previous) is str else 0
        conversation = _conversation(body)
        if conversation is not None:
            tokens += self._tokens.get(conversation) or 0
        return tokens


def _conversation(body: Mapping[str, Any] | None) -> str | None:
    """The id of the conversation a Responses body names (`"conv_..."` or `{"id": ...}`):
    its items are the turn's context, as a previous response's are."""
    conversation = body.get("conversation") if body is not None else None
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    return conversation if type(conversation) is str else None


def _reasoning(usage: Mapping[str, Any]) -> int:
    """The reasoning tokens of a usage's output: billed as its output, but not read again
    by the next turn (a reasoning model's reasoning is dropped after each turn, OpenAI's
    reasoning guide): counted as context, a turn after 20,000 tokens of reasoning
    reserved them again and a 20,000 TPM key was refused its every next turn as larger
    than its minute, where Azure billed the next turn its visible context alone."""
    for name in ("output_tokens_details", "completion_tokens_details"):
        details = usage.get(name)
        if isinstance(details, Mapping):
            count = details.get("reasoning_tokens")
            if type(count) is int and count > 0:
                return count
    return 0
