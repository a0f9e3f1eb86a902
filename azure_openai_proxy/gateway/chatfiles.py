"""The files a governed chat request's messages name (`{"type": "file", "file":
{"file_id"}}` parts), to be checked as the key's own (gateway/ownership.py), at a cost
that leaves the usual chat body's path as it was; and the names a governed body is judged
by (`model`, `messages`), refused when spelled in other letters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.errors import MalformedBody
from azure_openai_proxy.gateway.affinity import (
    MAX_REFERENCE_VALUES,
    ReferenceKeyCased,
    ReferencesUncheckable,
    folded,
)
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.estimate import SCHEMA_FIELDS

__all__ = ["PRICED_TOP_NAMES", "USUAL_TOP_NAMES", "chat_file_ids", "check_form_names", "check_top_names"]

# A chat body this large has its messages walked without searching its bytes first.
_WALKED_FROM = 1024 * 1024
# The names a chat body's file parts are read by (`messages[].content[].file.file_id`):
# spelled in other letters, refused (affinity.py `ReferenceKeyCased`, and why).
_CHAT_NAMES = frozenset({"messages", "content", "file", "file_id"})
_DOTLESS = "_\u0131".encode()  # `_` and a dotless i, which .NET upper-cases to `I`


def chat_file_ids(raw: bytes, body: Mapping[str, Any] | None,
                  plain: bool = False) -> list[str]:
    """The files a chat request's messages name (`{"type": "file", "file": {"file_id"}}`
    parts). The bytes are searched first: without "file" (or a `\\u` escape that could
    spell it), no message has a file part, and the messages are not walked. Not those of
    a body of `_WALKED_FROM` bytes or more: such a body is large for a few long strings
    (an inline image), whose parts are walked in microseconds, while searching its bytes
    costs 1.5-2.5 ns a byte (31-50 ms for 20 MB). More parts than the walk's bound
    (`MAX_REFERENCE_VALUES`): `ReferencesUncheckable`, a 400, unless the bytes show no
    file (searched then, whatever the size).
    `plain`: the caller found every message a role and a string content
    (gateway/governed.py `plain_chat_chars`): none names a file, and the bytes are not
    searched either."""
    if body is None or (plain and len(body["messages"]) <= MAX_REFERENCE_VALUES):
        return []  # the usual body: no step more than before (a join alone is ~4k)
    keys = "".join(body)  # `_exact_names` inline: the usual body's keys are lower-case
    if not (keys.isascii() and keys.islower()):
        _exact_names(body)  # one `Messages` beside `messages` would hide its files
    if len(raw) < _WALKED_FROM and _names_no_file(raw):
        return []
    try:
        return _file_parts(body.get("messages"))
    except ReferencesUncheckable:
        # Too many parts to walk: a large body is searched now, as a smaller one was
        # first, and one that cannot name a file goes through (as it did before large
        # bodies were walked) rather than getting a 400.
        if len(raw) >= _WALKED_FROM and _names_no_file(raw):
            return []
        raise


# The top-level names of nearly every body `check_top_names` is asked about (chat,
# completions and embeddings parameters), each spelled as the gateway reads it: a body
# of these alone spells none in other letters (one set test in C, ~1.6k instructions,
# where the join and its `islower`, a Unicode look-up per character, cost ~5k).
USUAL_TOP_NAMES = frozenset({
    "audio", "best_of", "data_sources", "dimensions", "echo", "encoding_format",
    "frequency_penalty", "function_call", "functions", "input", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
    "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt",
    "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "suffix", "temperature",
    "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options"})


# What a virtual key's request is estimated and held by: governance/estimate.py's
# maximum output and prompt fields (a test keeps them in step) and the budget's units
# (gateway/budgethold.py).
PRICED_TOP_NAMES = frozenset({
    "model",  # priced by (and on an `api: v1` deployment, run by) the body's model
    "max_tokens", "max_completion_tokens", "max_output_tokens", "messages", "input",
    "prompt", "instructions", *SCHEMA_FIELDS, "n", "best_of", "size", "quality", "stream",
    "partial_images"})


def check_top_names(body: Mapping[str, Any], model: bool, chat: bool) -> None:
    """Refuse (`ReferenceKeyCased`, a 400) a body whose top level spells a name the
    gateway judges it by in other letters, beside or instead of it: `model` (`model`:
    for a key limited to some models, judged by the body's `model`, the v1 API's
    deployment name, which the gateway writes there) and `messages` (`chat`: a chat's
    file parts are read from `messages`, and a plain chat's are not walked at all,
    gateway/governed.py `plain_chat_chars`). An upstream that binds JSON
    case-insensitively (ASP.NET Core's web defaults, the last spelling winning) would
    read the other one: a model the key may not use, or another key's files. Any key's
    body is refused one that spells a name its limits and budget are estimated by
    (`PRICED_TOP_NAMES`: `Max_Tokens` beside `max_tokens`, `N` beside `n`) in other
    letters: held at one, run at the other. Nested
    names (tool schemas, metadata) are the client's data: not looked at. A body of
    `USUAL_TOP_NAMES` alone need not be passed (the request path tests that first);
    keys all lower-case ASCII: one join and two tests."""
    keys = "".join(body)
    if keys.isascii() and keys.islower():
        return
    for field in body:
        name = folded(field)
        if name != field and ((model and name == "model") or (chat and name == "messages")
                              or name in PRICED_TOP_NAMES):
            raise ReferenceKeyCased(field, name)


def check_form_names(spool: SpooledBody, boundary: bytes) -> None:
    """`check_top_names`' `model` for a multipart form (audio, image edits): refused, a
    text part named `model` in other letters (`Model`, `MODEL`): an upstream reading
    form names case-insensitively (ASP.NET's form collection; a string bound from its
    first value) would read that one, a model the key may not use. (Quoted, a token or
    `name*=`: the gateway reads each part's name as the upstream does,
    gateway/formparts.py.) Two parts named `model` are a 400: readers differ on which
    one binds."""
    named = 0
    for name in spool.field_names(boundary):
        if name != "model" and folded(name) == "model":
            raise ReferenceKeyCased(name, "model")
        named += name == "model"
    if named > 1:
        raise MalformedBody("The form names `model` twice.", param="model")


def _names_no_file(raw: bytes) -> bool:
    """No "file" in the bytes, nor a `\\u` escape that could spell it, nor what another
    spelling of `file_id` holds (`_i`, `_I`, `_` and a dotless i)."""
    return (b"file" not in raw and b"\\u" not in raw and b"_i" not in raw
            and b"_I" not in raw and _DOTLESS not in raw)


def _exact_names(node: Mapping[str, Any]) -> None:
    """Raise `ReferenceKeyCased` if a key of `node` spells a chat name in other letters.
    Keys all lower-case ASCII (nearly always): one join and two tests."""
    keys = "".join(node)
    if keys.isascii() and keys.islower():
        return
    for field in node:
        name = folded(field)
        if name in _CHAT_NAMES and name != field:
            raise ReferenceKeyCased(field, name)


def _file_parts(messages: Any) -> list[str]:
    """The `file_id` of every file part of `messages`, within the walk's bound."""
    ids: list[str] = []
    budget = MAX_REFERENCE_VALUES  # the same bound as a resource body's walk
    for message in messages if isinstance(messages, list) else ():
        content = None
        if isinstance(message, dict):
            _exact_names(message)
            content = message.get("content")
        parts = content if isinstance(content, list) else ()
        budget -= len(parts) + 1
        if budget < 0:
            raise ReferencesUncheckable
        for part in parts:
            if not isinstance(part, dict):
                continue
            _exact_names(part)
            file = part.get("file")
            if not isinstance(file, dict):
                continue
            _exact_names(file)
            file_id = file.get("file_id")
            if isinstance(file_id, str) and file_id:
                ids.append(file_id)
    return ids
