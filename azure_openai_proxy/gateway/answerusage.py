"""The usage an answer is priced by beside its tokens, read when the relay has the
answer: a unit-billed JSON answer's units (pictures, a transcription's seconds), a
speech's audio length (`SpeechMeter`), and the Responses API's hosted image tool's part
(governance/toolusage.py), which names the image deployment the client's header chose.
Plain bytes and mappings in: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

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

__all__ = ["SpeechMeter", "answer_image_gen", "unit_usage", "with_image_gen"]


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

    __slots__ = ("_format", "_head", "_size", "_text_chars", "usage")

    def __init__(self, text: str, body: Mapping[str, Any]) -> None:
        self.usage = speech_usage(text, body)
        self._text_chars = speech_text_chars(text, body)
        self._format = body.get("response_format")
        self._head, self._size = b"", 0

    def feed(self, chunk: bytes) -> None:
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[:HEAD_BYTES - len(self._head)]
        self._size += len(chunk)

    def finish(self) -> None:
        """The audio has all passed: its length, where its bytes say it, re-prices it."""
        head, size = self._head, self._size
        if self._format == "pcm":
            seconds: float | None = size / _PCM_BYTES_PER_SECOND
        elif head[:4] in (b"RIFF", b"RF64"):  # a WAV of PCM: its bytes over its rate
            seconds = audio_seconds(head, size)
        else:
            seconds = audio_length(head, size)
        if seconds:
            self.usage[ESTIMATED_TOKENS] = speech_tokens(self._text_chars, seconds)
