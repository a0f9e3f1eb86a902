"""A chained Responses turn reads its predecessor's whole context: what it reserves.

A request naming `previous_response_id` (or a `conversation`) is billed by Azure for the previous response's
input and output again (they are this turn's context), though its body carries only the
new input: its TPM reservation and budget hold counted the new input alone, so a long
conversation passed a key's minute again and again, each turn settled after the fact
(its debt floored at one minute's limit then), as the uncounted tool schemas did before.

The tokens of each response a key made (its usage's input and output) are kept here,
in that key's own partition, by its id when its answer or stream ends (`ObjectOwners`,
gateway/ownership.py), and a turn naming it adds them to its estimate; a conversation
holds what its last turn's did (less its reasoning, which the next turn does not read).

Per key and bounded (`per_key` ids each, `total` in all, the least recently active
key's oldest given up first): one global table, cleared when full, let one key's flood
of responses flush every other key's entries, whose next turns then reserved nothing.

With `--workers N` every worker also writes what it notes to a table they share
(governance/sharedcontext.py), and reads it for a turn whose predecessor another worker
answered (`share`). With a database, what is noted is also written there in the
background (gateway/ownership.py `keep_chained`, for 30 days), and a turn that none of
them knows looks there once (`reserve_chained`: made before a restart). A conversation
made here holds its items' estimate until its first turn ends. A turn whose predecessor
is not known anywhere (forgotten, older than 30 days, or noted while the database
failed) reserves a guess, `MISS_CEILING` tokens, fitted by the request path to what the
smallest TPM limit of its key and team leaves beside the turn's own tokens
(`fitted`): a guess never makes a turn larger than its minute,
though it may wait for a full one. Azure's usage settles it, and gives the rest back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.governance.estimate import prompt_tokens
from azure_openai_proxy.governance.sharedcontext import SharedContext

__all__ = ["MISS_CEILING", "ChainedContext", "GuessedContext", "context_counted", "fitted"]

_PER_KEY = 2_048  # response and conversation ids a key keeps (about 100 bytes each)
_TOTAL = 16_384
# The context window of gpt-4o and gpt-4o-mini, the Responses API's usual models (o3's
# and o4-mini's is 200,000, gpt-4.1's 1,047,576): what a turn on them may read at most.
MISS_CEILING = 128_000


class GuessedContext(int):
    """A chained turn's context tokens guessed, not counted (its predecessor is not
    known to this gateway): an int, told apart by its type where a refusal explains it."""


class ChainedContext:
    """(key id, response or conversation id) -> the tokens a turn chained to it reads."""

    def __init__(self, per_key: int = _PER_KEY, total: int = _TOTAL,
                 ceiling: int = MISS_CEILING) -> None:
        self._per_key = per_key
        self._total = total
        self._ceiling = ceiling
        # key id -> its ids, oldest first; the keys least recently noted first
        self._keys: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()
        self._size = 0
        self._shared: SharedContext | None = None

    def share(self, shared: SharedContext) -> None:
        """Note to, and look up in, the table the server's workers share."""
        self._shared = shared

    def __len__(self) -> int:
        return self._size

    def note(self, key_id: str, response_id: str, usage: Mapping[str, Any] | None,
             body: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
        """The response `response_id` of `key_id` ended with `usage` (Azure's, or an
        estimate); made from `body`, its request: the conversation it names holds as
        much after it. Returns what was noted (id, tokens), for the database."""
        if not usage:
            return []
        total = 0
        for names in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
            for name in names:
                count = usage.get(name)
                if type(count) is int and count > 0:
                    total += count
                    break
        total -= min(_reasoning(usage), total)
        if not total:
            return []
        noted = [(response_id, total)]
        conversation = _conversation(body)
        if conversation is not None:
            noted.append((conversation, total))
        for name, tokens in noted:
            self._put(key_id, name, tokens)
        return noted

    def started(self, key_id: str, conversation_id: str,
                body: Mapping[str, Any] | None) -> list[tuple[str, int]]:
        """`key_id` made the conversation `conversation_id` with `body` (its `items`,
        estimated as a prompt): what its first turn reads, known here, not guessed.
        Returns what was noted, as `note` does."""
        items = body.get("items") if body is not None else None
        tokens = prompt_tokens({"input": items}) if items else 0
        self._put(key_id, conversation_id, tokens)
        return [(conversation_id, tokens)]

    def named(self, body: Mapping[str, Any] | None) -> list[str]:
        """The response and conversation ids a Responses body chains to."""
        previous = body.get("previous_response_id") if body is not None else None
        conversation = _conversation(body)
        return [name for name in (previous if type(previous) is str else None, conversation)
                if name is not None]

    def learn(self, key_id: str, name: str, tokens: int) -> None:
        """What the database kept of `name` (noted before a restart): known here again,
        and to the other workers; unless a worker noted it meanwhile (a conversation's
        newer count is not replaced by an older one)."""
        entries = self._keys.get(key_id)
        if (entries is None or name not in entries) and (
                self._shared is None or self._shared.get(key_id, name) is None):
            self._put(key_id, name, tokens)

    def reserve(self, body: Mapping[str, Any] | None, key_id: str) -> int:
        """The context tokens a Responses request body of `key_id`'s chains to (its
        `previous_response_id` and `conversation`): those noted for the key, or for one
        not known here a `GuessedContext` of the ceiling; 0: it names neither."""
        if body is None:
            return 0
        previous = body.get("previous_response_id")
        conversation = _conversation(body)
        if type(previous) is not str and conversation is None:
            return 0  # most requests
        entries = self._keys.get(key_id)
        tokens = 0
        for name in (previous if type(previous) is str else None, conversation):
            if name is None:
                continue
            if name is conversation and self._shared is not None:
                # A conversation's count grows with each turn, on whichever worker: the
                # shared one is the latest (a response's never changes: here first).
                known = self._shared_count(key_id, name)
                if known is None:
                    known = entries.get(name) if entries is not None else None
            else:
                known = entries.get(name) if entries is not None else None
                if known is None:
                    known = self._shared_count(key_id, name)
            if known is None:
                return GuessedContext(self._ceiling)
            tokens += known
        return tokens

    def _shared_count(self, key_id: str, name: str) -> int | None:
        """What another worker noted for `name` (kept here too once read), or None."""
        shared = self._shared
        known = shared.get(key_id, name) if shared is not None else None
        if known is not None:
            self._put(key_id, name, known, share=False)
        return known

    def _put(self, key_id: str, name: str, tokens: int, *, share: bool = True) -> None:
        if share and self._shared is not None:
            self._shared.put(key_id, name, tokens)
        keys = self._keys
        entries = keys.get(key_id)
        if entries is None:
            entries = keys[key_id] = OrderedDict()
        else:
            keys.move_to_end(key_id)
        if name in entries:
            entries.move_to_end(name)
        else:
            self._size += 1
            if len(entries) >= self._per_key:
                entries.popitem(last=False)
                self._size -= 1
        entries[name] = tokens
        while self._size > self._total:  # the least recently active key's oldest first
            oldest_key, oldest = next(iter(keys.items()))
            oldest.popitem(last=False)
            self._size -= 1
            if not oldest:
                del keys[oldest_key]


def context_counted(chained: int, waits: bool = False) -> str:
    """What a refusal of a turn too large for the minute (or, `waits`, for what is left
    of it) says of the `chained` context tokens it reserved: its prompt may be short."""
    if type(chained) is GuessedContext:  # never larger than the minute (`fitted`)
        how = ("a guess: the turn it follows is not known to this gateway, so this request"
               " waits for the minute's tokens it may need")
    else:
        how = "that turn's input and output"
    counted = (f", counting the {chained:,} tokens of earlier turns its previous_response_id"
               f" or conversation makes Azure read again ({how})")
    if waits:
        return counted
    return counted + ": start a new conversation, or lower max_output_tokens or the input"


def fitted(chained: int, own: int, tpm: float | None) -> int:
    """The context tokens a chained turn of `own` tokens reserves: a count as it is, a
    guess (`GuessedContext`, its predecessor not known to this gateway) within what the
    smallest TPM limit `tpm` leaves beside `own`, so that a guess never refuses a turn
    as larger than the minute (a count does: the turn is)."""
    if type(chained) is not GuessedContext or tpm is None:
        return chained
    return GuessedContext(max(0, min(chained, int(tpm) - own)))


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
