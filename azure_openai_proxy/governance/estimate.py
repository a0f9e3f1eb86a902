"""Token estimates, for the requests Azure's usage never reached: a stream the client left,
or that broke, before the usage frame.

About four characters a token (OpenAI's rule of thumb for English), rounded up, so a
request that carried any text is never estimated at zero; text outside ASCII by its
UTF-8 bytes (`text_length`). Cheap on purpose: the stream
relay keeps only a running count of the content characters it relayed, and the prompt is
measured only when an estimate is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azure_openai_proxy.governance.mediatokens import (
    LARGEST_INPUT_PICTURE,
    input_picture_tokens,
    picture_tokens,
    transcription_tokens,
    unanswered_units,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "IMAGE_TOKENS",
    "LARGEST_INPUT_PICTURE",
    "MESSAGE_OVERHEAD_TOKENS",
    "SCHEMA_FIELDS",
    "estimate_tokens",
    "estimated_usage",
    "generates",
    "input_picture_tokens",
    "max_output_tokens",
    "picture_tokens",
    "prompt_chars",
    "prompt_tokens",
    "text_length",
    "tokens_for_chars",
    "transcription_tokens",
    "unanswered_usage",
]

CHARS_PER_TOKEN = 4
# An answer's size when the request names no maximum: what a typical chat answer costs,
# so a TPM limit or a budget still bites on requests that do not say. The setting
# `default_completion_tokens` overrides it.
DEFAULT_COMPLETION_TOKENS = 1024
_MAX_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Operations whose answer is text tokens; embeddings produce none. A compaction's
# output (its compacted items) is billed as a Responses call's output tokens.
_COMPLETING = frozenset({"chat/completions", "completions", "responses", "responses/compact"})
# Per message, the chat format adds a few tokens of its own (role, separators).
MESSAGE_OVERHEAD_TOKENS = 4
# Text the model reads besides the prompt: tool and function definitions, a response
# format's JSON schema, a predicted output, the Responses API's `text.format`. Counted
# by their JSON's characters before the request goes out: counted only after the answer,
# a 40 KB tool description with `max_tokens: 1` passed a 2,000 TPM key again and again
# (its debt was floored at one minute's limit then), 3.5 times its limit in ten minutes.
SCHEMA_FIELDS = frozenset({"tools", "functions", "response_format", "prediction", "text"})
# An image part before Azure says what it cost: a 1024x1024 picture at high detail on
# gpt-4o (85 + 4 tiles of 170); `"detail": "low"` is 85.
IMAGE_TOKENS = 765
_LOW_DETAIL_IMAGE_TOKENS = 85
# A Responses `image_generation_call` passed back as input (a stateless client's
# `input += response.output`) carries its picture as base64 in `result`: an image.
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image_generation_call"})


def text_length(text: str) -> int:
    """`text`'s length in the estimate's characters, four a token: its characters when it
    is ASCII, else its UTF-8 bytes. Tokenizers work on bytes: Chinese, Japanese or
    Korean runs about a token a character (3 bytes), an emoji a token or more (4), where
    English runs four characters a token; counted by characters, a CJK prompt was
    reserved a quarter of what Azure bills (a key's TPM and a budget's holds a quarter
    of the burst they let through). `isascii` reads a flag the string keeps: ASCII text
    pays no walk. A lone surrogate (JSON's `\ud800`) counts its 3 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def tokens_for_chars(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN) if chars > 0 else 0


def prompt_chars(body: Mapping[str, Any] | None) -> tuple[int, int]:
    """(characters of prompt text, number of messages) in a chat, completions or
    Responses request body: every prompt field it has, as `prompt_tokens` reads them.
    A Responses `prompt` (a stored template's reference, its variables) adds to the
    `instructions` and `input` beside it: it was read instead of them, so a stream left
    before its usage frame was estimated at its template's few characters."""
    if not body:
        return 0, 0
    # the schemas the model read too, as the estimate before the request counted them
    # (else a stream left before its usage frame gave back all their reserved tokens)
    chars = 0
    for name in SCHEMA_FIELDS.intersection(body):
        chars += _json_chars(body[name])
    for name in _PROMPT_FIELDS.intersection(body):
        value = body[name]
        if value is not None:
            chars += _text_length(value)
    messages = body.get("messages")
    return chars, len(messages) if isinstance(messages, list) else 0


def estimated_usage(body: Mapping[str, Any] | None, completion_chars: int) -> dict[str, Any]:
    """A usage object (chat's shape) estimated from the request and the characters of
    content relayed, marked `"estimated": True`."""
    chars, messages = prompt_chars(body)
    prompt = tokens_for_chars(chars) + messages * MESSAGE_OVERHEAD_TOKENS
    completion = tokens_for_chars(completion_chars)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "estimated": True}


def with_context(usage: dict[str, Any] | None, context: int) -> dict[str, Any] | None:
    """An estimated `usage` with the `context` tokens a chained Responses turn made Azure
    read again (gateway/chained.py) added to its prompt: billed, though not in the body."""
    if usage is not None and context > 0:
        usage["prompt_tokens"] += context
        usage["total_tokens"] += context
    return usage


def max_output_tokens(body: Mapping[str, Any] | None,
                      default: int = DEFAULT_COMPLETION_TOKENS,
                      operation: str | None = None) -> int:
    """The most the answer may cost in output tokens: the largest of the request's max
    tokens it names (else `default` when `operation` generates text; None: assumed to;
    embeddings, speech, files and batches produce none), times its `n` (or `best_of`).
    The one reading, for the TPM reservation, the budget hold and an unanswered
    request's estimate."""
    # `generates(operation)`, inline: this runs for every governed request.
    completion = default if operation is None or operation in _COMPLETING or (
        operation.endswith("/runs")) else 0
    if not body:
        return completion
    most = None
    for name in _MAX_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        # A plain int inline (every JSON count), anything else judged by `_count`.
        count = value if type(value) is int and value >= 0 else _count(value)
        # The largest named: with two (`max_tokens` and `max_completion_tokens`), Azure
        # may read either (a reasoning deployment is sent the second alone, compat.py).
        if count is not None and (most is None or count > most):
            most = count
    if most is not None:
        completion = most
    if body.get("n") is None and body.get("best_of") is None:
        return completion  # one completion: most requests
    return completion * _choices(body)


def generates(operation: str) -> bool:
    """Whether an operation's answer is generated text, billed as completion tokens."""
    return operation in _COMPLETING or operation.endswith("/runs")


def _count(value: Any) -> int | None:
    """`value` if it is a count (an int >= 0, not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _choices(body: Mapping[str, Any]) -> int:
    """How many completions a request asks Azure to generate (`n`, `best_of`)."""
    n = 1
    for name in ("n", "best_of"):
        value = _count(body.get(name))
        if value is not None and value > n:
            n = value
    return n


def unanswered_usage(body: Mapping[str, Any] | None, operation: str, stream: bool,
                     default: int = DEFAULT_COMPLETION_TOKENS,
                     audio_seconds: float | None = None,
                     picture_sizes: Sequence[tuple[int, int] | None] | None = None,
                     form_bytes: int = 0) -> dict[str, Any] | None:
    """The usage of a request Azure received whose answer never came back (the client
    left, the upstream timed out): the prompt, and for a non-streamed call the whole
    answer it may be billed for (Azure finishes those); marked estimated. A unit-priced
    one (pictures, speech, a transcription) in its units, `unanswered_units`: a form's
    `audio_seconds` and `picture_sizes`, read by the caller (its files' first bytes),
    and its `form_bytes` (the most a form that could not be read may ask).
    None for an operation that is priced by neither."""
    if operation in _UNIT_PRICED:
        return unanswered_units(body, operation, audio_seconds, picture_sizes, form_bytes)
    if operation not in _COMPLETING and operation != "embeddings":
        return None
    usage = estimated_usage(body, 0)
    if operation in _COMPLETING and not stream:
        completion = max_output_tokens(body, default, operation)
        usage["completion_tokens"] = completion
        usage["total_tokens"] += completion
    return usage if usage["total_tokens"] else None


# Routes Azure bills by the picture, the audio's minute or the character (the ledger's
# `UNIT_PRICED`, gateway/ledgerrows.py).
_UNIT_PRICED = frozenset({"images/generations", "images/edits", "images/variations",
                          "audio/transcriptions", "audio/translations", "audio/speech"})


def estimate_tokens(body: Mapping[str, Any] | None,
                    default_completion: int = DEFAULT_COMPLETION_TOKENS,
                    operation: str | None = None) -> int:
    """Tokens a request may cost: about a token per four characters of its text
    (`messages`, `input`, `prompt`, `instructions`), plus its most output tokens
    (`max_output_tokens`: its max, else `default_completion`
    when it generates text, times its `n`)."""
    if body is None:
        return 0
    chars = 0  # `prompt_tokens`, inline: no call more than the limit's own
    for name in _PROMPT_FIELDS.intersection(body):
        value = body[name]
        if value is not None:
            chars += _text_length(value)
    for name in SCHEMA_FIELDS.intersection(body):
        chars += _json_chars(body[name])
    return -(-chars // 4) + max_output_tokens(body, default_completion, operation)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """`estimate_tokens`' prompt part: about a token per four characters of the body's
    text. A governed request measures it once, for its TPM limit and its budget hold
    (gateway/governed.py `hold`)."""
    chars = 0
    # Only the fields the body has (one set operation in C instead of four look-ups).
    for name in _PROMPT_FIELDS.intersection(body):
        value = body[name]
        if value is not None:
            chars += _text_length(value)
    for name in SCHEMA_FIELDS.intersection(body):
        chars += _json_chars(body[name])
    return -(-chars // 4)


_PROMPT_FIELDS = frozenset({"messages", "input", "prompt", "instructions"})


def _text_length(value: Any) -> int:
    """Characters of the text the model reads in a prompt field (`messages`, `input`,
    `prompt`, `instructions`): every string in it, under whatever name, but those of
    `_NOT_TEXT`; an image part as its estimate (`_image_chars`); a token id (the
    completions' and embeddings' arrays of ints, outside any object) as one token. Read
    by names, only `content`, `text`, `input_text` and `arguments` counted: an
    assistant's `tool_calls` (their arguments), a Responses `function_call_output`'s
    `output`, a reasoning `summary`, a `refusal` were free however long (40 KB of them
    with `max_tokens: 1` passed a 2,000 TPM key), and so were 20,000 token ids. A number
    inside an object (an annotation's `start_index`, a click's `x`, an `output_index`)
    is not text: read as a token id, it was four characters each. Walks with their own
    stacks, as `_json_chars`: however deep the text, it counts."""
    if isinstance(value, str):
        return text_length(value)
    chars = 0
    objects: list[Any] = []  # found outside any object: walked below, without token ids
    stack = [value]
    while stack:  # outside any object: lists of token ids, or of strings, or messages
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            objects.append(item)
        elif isinstance(item, str):
            chars += text_length(item)
        elif type(item) is int:  # a token id (not a bool: `type`, not `isinstance`)
            chars += CHARS_PER_TOKEN
        elif isinstance(item, list):  # a list's subclass
            stack.extend(item)
        elif isinstance(item, Mapping):  # a mapping that is not a dict
            objects.append(item)
    stack = objects
    while stack:  # inside objects: mostly objects (messages, parts, items)
        item = stack.pop()
        if type(item) is not dict:  # one check for an object (not three, as before)
            if isinstance(item, str):
                chars += text_length(item)
            elif isinstance(item, list):
                stack.extend(item)
            # `isinstance(x, Mapping)` runs the ABC's Python hook: not for a number
            elif type(item) is not int and isinstance(item, Mapping):
                stack.append(dict(item))
            continue
        # The common message, a role and a string content, in three checks.
        content = item.get("content")
        if len(item) == 2 and isinstance(content, str) and "role" in item:
            chars += len(content) if content.isascii() else text_length(content)
            continue
        kind = item.get("type")
        if type(kind) is str and kind in _IMAGE_PARTS:
            chars += _image_chars(item)  # and any text beside it, read below
        for name, inner in item.items():
            if name in _NOT_TEXT:
                continue
            # A string (most values) counted here, a null (a tool call's `content`) or a
            # number dropped, a list's items pushed: each took a turn of the loop (and
            # the null the ABC's hook). `request_estimate` of four messages with a tool
            # call: 43,954 -> 40,093 instructions (callgrind; fddb2cd's walk by names
            # 24,997, which skipped the tool call's text)
            if type(inner) is str:
                chars += len(inner) if inner.isascii() else text_length(inner)
            elif type(inner) is list:  # its items, without a turn of its own
                stack.extend(inner)
            elif inner is not None and type(inner) is not int:
                stack.append(inner)
    return chars


# Names whose strings are not text the model reads as their characters: a message's
# role, a part's type and ids (the chat format's per-message tokens cover them), an
# image part's URL (a data: URL is megabytes; the picture is `_image_chars`), and binary
# payloads, base64 (audio, a file's bytes, reasoning's encrypted content), whose tokens
# are not a function of their length: not estimated here (Azure's usage settles them):
# an image generation's `result` (megabytes of base64: 500,000 tokens by length) too. An
# output text's `logprobs` passed back are not read by the model either (with
# `top_logprobs: 20`, ~100 tokens by length, byte arrays counted as token ids, for each
# token of the text).
_NOT_TEXT = frozenset({"role", "type", "id", "call_id", "tool_call_id", "status",
                       "detail", "format", "url", "image_url", "file_id", "file_url",
                       "data", "file_data", "filename", "encrypted_content", "result",
                       "logprobs"})


def _image_chars(part: Mapping[str, Any]) -> int:
    """An image part's estimate, in characters (four a token, as the text beside it)."""
    detail = part.get("detail")
    image = part.get("image_url")
    if detail is None and isinstance(image, Mapping):
        detail = image.get("detail")  # chat's spelling: {"image_url": {"url", "detail"}}
    tokens = _LOW_DETAIL_IMAGE_TOKENS if detail == "low" else IMAGE_TOKENS
    return tokens * CHARS_PER_TOKEN


def _json_chars(value: Any) -> int:
    """About the characters of `value` written as JSON (its strings, names and a few
    for each other value): a tool's schema reads as text to the model. A walk with its
    own stack, not recursion: a schema nested as deep as the parser allows is counted
    whole (a depth cap let a description hidden 15 levels down count as nothing)."""
    chars = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += text_length(item) + 2
        elif isinstance(item, Mapping):
            for name, inner in item.items():
                chars += (text_length(name) if isinstance(name, str) else 4) + 4
                stack.append(inner)
        elif isinstance(item, list):
            chars += len(item)
            stack.extend(item)
        else:
            chars += 4  # a number, true, false or null
    return chars
