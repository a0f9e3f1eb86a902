"""The usage an answer is priced by beside its tokens, read when the relay has the
answer: a unit-billed JSON answer's units (pictures, a transcription's seconds), a
speech's audio length (`SpeechMeter`), a streamed speech's usage (`SpeechStreamMeter`),
and the Responses API's hosted image tool's part
(governance/toolusage.py), which names the image deployment the client's header chose.
Plain bytes and mappings in: no I/O."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.governance.estimate import estimated_usage, text_length, with_context
from azure_openai_proxy.governance.mediasize import HEAD_BYTES, audio_length, audio_seconds
from azure_openai_proxy.governance.mediatokens import (
    ESTIMATED_TOKENS,
    speech_text_chars,
    speech_tokens,
    speech_usage,
)
from azure_openai_proxy.governance.toolusage import (
    IMAGE_DEPLOYMENT_HEADER,
    IMAGE_GEN,
    image_gen_usage,
)
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.sse import MAX_RELAYED_EVENT_BYTES, SseDecoder

__all__ = ["SpeechMeter", "SpeechStreamMeter", "answer_image_gen", "countless_usage",
           "unit_usage", "with_counts", "with_image_gen"]


def unit_usage(operation: str, raw: bytes, prompt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The units a unit-billed JSON answer without token usage is priced by: the images
    returned (with the request's size and quality; a multipart edit's are not read:
    "unknown", left unpriced), or a verbose transcription's duration."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    if operation.startswith("images/"):
        data = answer.get("data")
        if not isinstance(data, list) or not data:
            return None
        size, quality = (prompt.get("size"), prompt.get("quality")) if prompt else ("unknown", None)
        return {"images": len(data), "size": size, "quality": quality}
    duration = answer.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        return {"audio_seconds": float(duration)}
    return None


# The counts a usage is read by (`RequestRecord.tokens`, the ledger's `count_tokens`).
_COUNTS = ("prompt_tokens", "input_tokens", "completion_tokens", "output_tokens")
# Where a chat, completions or Responses answer keeps its generated text (its choices'
# messages, a completion's text, the output items' text parts and call arguments).
_TEXT_KEYS = frozenset({"content", "text", "refusal", "arguments"})
_TEXT_DEPTH = 6  # output[i].content[j].text, choices[i].message.tool_calls[j].function...


def countless_usage(usage: dict[str, Any], raw: bytes, body: Mapping[str, Any] | None,
                    record: RequestRecord, status: int) -> dict[str, Any]:
    """A model's JSON answer's `usage` (chat, completions, embeddings, a foreground
    response) as `record` keeps it: Azure's when it has a count; a 2xx one's with none
    (`{}`, each count null: Azure generated it, and bills it) an estimate, as for a
    stream cut short (`estimated_usage`: the prompt, the context a chained turn made
    Azure read, and the answer's text `raw` holds), flagged estimated: never free.
    Called only when its `total_tokens` is not a count (relay.py): an answer with one
    never comes. A background response's (its `body` says so) is left: the read that
    shows its usage counts it (gateway/rereads.py)."""
    if not 200 <= status < 300 or (body is not None and body.get("background") is True):
        return usage
    for name in _COUNTS:
        if type(usage.get(name)) is int:
            return usage
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    chars = 0
    if type(answer) is dict:
        chars = _text_chars(answer.get("choices"), 0) + _text_chars(answer.get("output"), 0)
    estimate = with_context(estimated_usage(body, chars), record.context_tokens)
    return estimate if estimate is not None else {"estimated": True}


def with_counts(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stream's usage (Azure's usage frame, a Responses stream's final event) when it
    has a count; None when it has none (`{}`, each count null): the relay then
    estimates the stream as one cut short, never free."""
    if usage:
        for name in _COUNTS:
            if type(usage.get(name)) is int:
                return usage
    return None


def _text_chars(value: Any, depth: int) -> int:
    """The characters of generated text under `value` (an answer's choices or output):
    every string under a `content`, `text`, `refusal` or `arguments` key, as a prompt's
    are counted (`text_length`: UTF-8 bytes outside ASCII)."""
    if depth > _TEXT_DEPTH:
        return 0
    if type(value) is list:
        return sum(_text_chars(item, depth + 1) for item in value)
    if type(value) is not dict:
        return 0
    chars = 0
    for key, item in value.items():
        if type(item) is str:
            if key in _TEXT_KEYS:
                chars += len(item) if item.isascii() else text_length(item)
        elif type(item) is dict or type(item) is list:
            chars += _text_chars(item, depth + 1)
    return chars


def answer_image_gen(raw: bytes) -> dict[str, Any] | None:
    """The hosted image tool's part of a Responses JSON answer (governance/toolusage.py)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return image_gen_usage(answer, None) if type(answer) is dict else None


def with_image_gen(usage: dict[str, Any] | None, image_gen: dict[str, Any] | None,
                   headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The record's usage with the image tool's part, which names the image deployment
    the client's header chose (checked before it went upstream: gateway/translation.py)."""
    if image_gen is None:
        return usage
    deployment = headers.get(IMAGE_DEPLOYMENT_HEADER)
    return {**(usage or {}), IMAGE_GEN: {**image_gen, "deployment": deployment}}


# A speech's `pcm` answer: 24 kHz 16-bit mono samples, no header (OpenAI's speech guide).
_PCM_BYTES_PER_SECOND = 48_000


class SpeechMeter:
    """A speech answer's audio as it passes to the client (its first bytes, its size).
    `usage` is the record's from the start (`speech_usage`: its characters, and the
    tokens a token-priced model bills, its audio's length estimated from them); once
    the audio has all passed, its tokens are estimated from the audio's length where its
    bytes say it (`pcm`'s size; a WAV's; an MP3's frames, a FLAC's samples, as
    `audio_length` reads them), else left as they were."""

    __slots__ = ("_body", "_format", "_head", "_size", "_text", "_text_chars", "usage")

    def __init__(self, text: str, body: Mapping[str, Any]) -> None:
        self.usage = speech_usage(text, body)
        self._text, self._body = text, body  # the hold's estimate, for `cut`
        self._text_chars = speech_text_chars(text, body)
        self._format = body.get("response_format")
        self._head, self._size = b"", 0

    def feed(self, chunk: bytes) -> None:
        self.feed_sized(chunk, len(chunk))

    def feed_sized(self, first: bytes, size: int) -> None:
        """A chunk of `size` bytes known by its `first` ones (a streamed speech's base64
        audio is never decoded whole: its size is its text's)."""
        if len(self._head) < HEAD_BYTES:
            self._head += first[:HEAD_BYTES - len(self._head)]
        self._size += size

    def finish(self) -> None:
        """The audio has all passed: its length, where its bytes say it, re-prices it."""
        seconds = self._seconds()
        if seconds:
            self.usage[ESTIMATED_TOKENS] = speech_tokens(self._text_chars, seconds)

    def cut(self) -> dict[str, Any]:
        """The usage of a speech cut before its end (the client left, the stream broke),
        flagged estimated: Azure may finish and bill it whole. The whole speech's
        estimate from its characters (`speech_usage`), or the audio passed so far where
        its bytes say a longer one. `pcm`'s bytes are its length (a rate fixed by
        OpenAI); any other format's is what its header states (a FLAC's samples, a WAV's
        rate, an MP3's frame count), not what passed, and a header that lies long must
        not price a cut speech past the budget hold's estimate (read slower): capped
        there."""
        seconds = self._seconds()
        if seconds:
            heard = speech_tokens(self._text_chars, seconds)
            if heard["completion_tokens"] > self.usage[ESTIMATED_TOKENS]["completion_tokens"]:
                if self._format != "pcm":
                    most = speech_usage(self._text, self._body, held=True)[ESTIMATED_TOKENS]
                    if heard["completion_tokens"] > most["completion_tokens"]:
                        heard = most
                self.usage[ESTIMATED_TOKENS] = heard
        return {**self.usage, "estimated": True}

    def _seconds(self) -> float | None:
        head, size = self._head, self._size
        if self._format == "pcm":
            return size / _PCM_BYTES_PER_SECOND
        if head[:4] in (b"RIFF", b"RF64"):  # a WAV of PCM: its bytes over its rate
            return audio_seconds(head, size)
        return audio_length(head, size)


_DELTA, _DONE = b'"speech.audio.delta"', b'"speech.audio.done"'
_MOST = 2**53  # a count past it is no count Azure made


class SpeechStreamMeter:
    """A speech asked with `stream_format: "sse"` (gpt-4o-mini-tts), read as it is
    relayed unchanged: its `speech.audio.delta` events' audio goes to `heard` (a
    `SpeechMeter`: its length so far), and its last event, `speech.audio.done`, carries
    Azure's usage (`input_tokens` of text, `output_tokens` of audio). `recorded()` is the
    record's usage: Azure's, measured, once the done event has passed; else `heard`'s
    estimate of a speech cut short (`SpeechMeter.cut`). Only a speech's stream has one:
    chat's frames never come here."""

    __slots__ = ("_decoder", "heard", "usage")

    def __init__(self, heard: SpeechMeter, event_limit: int = MAX_RELAYED_EVENT_BYTES) -> None:
        self._decoder = SseDecoder(event_limit, MAX_RELAYED_EVENT_BYTES)
        self.heard = heard
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            self._read(event.data)

    def recorded(self) -> dict[str, Any]:
        """At the stream's end (or the client's leaving): an event the body ended
        without a blank line after is read too (a cut one does not parse: ignored)."""
        for event in self._decoder.flush():
            self._read(event.data)
        if self.usage is not None:
            return self.usage
        return self.heard.cut()

    def _read(self, data: bytes | None) -> None:
        if data is None or self.usage is not None:
            return
        if data.find(_DELTA) != -1:
            _heard_audio(data, self.heard)
        elif data.find(_DONE) != -1:
            self.usage = _done_usage(data)


# The base64 characters that decode to a speech's first HEAD_BYTES (a multiple of 4).
_HEAD_CHARS = -(-HEAD_BYTES // 3) * 4
_AUDIO_KEY = b'"audio"'


def _heard_audio(data: bytes, heard: SpeechMeter) -> None:
    """A delta event's audio to `heard`: its first bytes decoded, its size from its
    base64 text's length, so that an event of megabytes costs no copy of itself (a JSON
    parse and a whole decode peaked at ~15 times the event's size). A string with JSON
    escapes in it (never OpenAI's) is parsed the slow way; an event that is not what
    OpenAI sends is not counted."""
    key = data.find(_AUDIO_KEY)
    colon = data.find(b":", key + len(_AUDIO_KEY)) if key != -1 else -1
    quote = data.find(b'"', colon + 1) if colon != -1 else -1
    end = data.find(b'"', quote + 1) if quote != -1 else -1
    simple = (end != -1 and not data[key + len(_AUDIO_KEY):colon].strip()
              and not data[colon + 1:quote].strip() and data.find(b"\\", quote, end) == -1)
    try:
        if not simple:
            audio = base64.b64decode(orjson.loads(data)["audio"], validate=True)
            heard.feed(audio)
            return
        start, length = quote + 1, end - quote - 1
        if length % 4:
            return
        first = base64.b64decode(data[start:start + min(length, _HEAD_CHARS)], validate=True)
        padding = (data[end - 1] == 61) + (length > 1 and data[end - 2] == 61)  # "="
        heard.feed_sized(first, length // 4 * 3 - padding)
    except (orjson.JSONDecodeError, binascii.Error, TypeError, KeyError, ValueError):
        return  # not what OpenAI sends: its audio is not counted


def _done_usage(data: bytes) -> dict[str, Any] | None:
    """A done event's usage, its output tokens marked as audio (they are all audio: the
    ledger prices them at the model's audio rate); None when it has no counts."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    usage = event.get("usage") if type(event) is dict else None
    if type(usage) is not dict:
        return None
    tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
    if not (_is_count(tokens_in) and _is_count(tokens_out)):
        return None
    return {**usage, "output_tokens_details": {"audio_tokens": tokens_out}}


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MOST
