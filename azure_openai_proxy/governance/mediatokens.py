"""What pictures and audio cost in the units Azure bills them by: gpt-image-1's picture
tokens (its output, and an edit's input pictures), a token-priced transcription's audio
and transcript tokens (`transcription_tokens`), and the usage of a unit-priced request
sent and never answered (`unanswered_units`). Pure: plain data in, plain data out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ESTIMATED_TOKENS",
    "LARGEST_INPUT_PICTURE",
    "LONGEST_PICTURE_PROMPT",
    "PARTIAL_IMAGE_TOKENS",
    "TRANSCRIBING",
    "input_picture_tokens",
    "most_input_pictures",
    "picture_tokens",
    "picture_usage",
    "refused_pictures",
    "speech_text_chars",
    "speech_tokens",
    "speech_usage",
    "transcription_tokens",
    "unanswered_units",
]

# gpt-image-1's output tokens a picture, by quality and size (OpenAI's image generation
# guide): an unknown or `auto` quality is held as `high`, an unknown or `auto` size as
# the quality's largest. A model whose pictures are not priced by tokens (dall-e-3: its
# token rates are 0) costs nothing by these.
_PICTURE_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
_MOST_PICTURES = 10  # `n` past it is Azure's 400, never a bill
# A streamed generation's or edit's `partial_images` (0-3): each adds 100 image output
# tokens (OpenAI's image generation guide, its cost and latency part; gpt-image-1).
PARTIAL_IMAGE_TOKENS = _PARTIAL_IMAGE_TOKENS = 100
_MOST_PARTIAL_IMAGES = 3


def picture_tokens(body: Mapping[str, Any] | None) -> int:
    """The output tokens an image generation or edit may be billed (its `n` pictures at
    their quality and size, the dearest where not said, and the partial images it
    streams): what a budget holds for it."""
    if body is None:
        return 0
    partial = body.get("partial_images")
    if partial is not None:  # a count from 0 to 3, else held as the most
        if isinstance(partial, str) and partial.isascii() and partial.isdigit():
            partial = int(partial) if len(partial) < 3 else _MOST_PARTIAL_IMAGES
        if type(partial) is not int or not 0 <= partial <= _MOST_PARTIAL_IMAGES:
            partial = _MOST_PARTIAL_IMAGES
        return _final_picture_tokens(body) + partial * _PARTIAL_IMAGE_TOKENS * _pictures(body)
    return _final_picture_tokens(body)


def _pictures(body: Mapping[str, Any]) -> int:
    # `n` not a count from 1 to 10 (a string, `+10`, a float): Azure may read it as one
    # the gateway cannot, so held as the most (past 10 it is Azure's 400, never a bill)
    n = body.get("n", 1)
    return n if type(n) is int and 1 <= n <= _MOST_PICTURES else _MOST_PICTURES


def _final_picture_tokens(body: Mapping[str, Any]) -> int:
    quality, size = body.get("quality"), body.get("size")
    by_size = _PICTURE_TOKENS.get(quality) if isinstance(quality, str) else None
    if by_size is None:
        by_size = _PICTURE_TOKENS["high"]
    each = by_size.get(size) if isinstance(size, str) else None
    if each is None:
        each = max(by_size.values())
    return each * _pictures(body)


# gpt-image-1's input pictures (an edit's `image`s), in image tokens (OpenAI's vision
# guide, "Calculating costs", GPT Image 1): the picture scaled to fit 2048x2048, then
# down so that its shortest side is 512 pixels, costs 65 tokens and 129 per 512-pixel
# tile it covers (a 1024x1024 picture: 194, as its usage says). `input_fidelity: high`
# adds 4,096 tokens for a square picture and 6,144 for any other (held as 6,144).
_PICTURE_BASE_TOKENS, _PICTURE_TILE_TOKENS, _TILE = 65, 129, 512
_HIGH_FIDELITY_TOKENS = 6_144
# The dearest picture the rule prices: a long thin one whose scaled size covers four
# tiles (512x2048); a picture whose size cannot be read is held as it.
LARGEST_INPUT_PICTURE = (_TILE, 4 * _TILE)


def input_picture_tokens(size: tuple[int, int] | None, fidelity: object = None) -> int:
    """The image tokens gpt-image-1 bills for one input picture of `size` (None: not
    known, held as `LARGEST_INPUT_PICTURE`) at an edit's `input_fidelity` (`low`, the
    default; any other value held as `high`)."""
    width, height = size if size is not None else LARGEST_INPUT_PICTURE
    if width > 2048 or height > 2048:
        scale = 2048 / max(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    if min(width, height) > _TILE:
        scale = _TILE / min(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    tiles = -(-width // _TILE) * -(-height // _TILE)
    extra = 0 if fidelity is None or fidelity == "low" else _HIGH_FIDELITY_TOKENS
    return _PICTURE_BASE_TOKENS + _PICTURE_TILE_TOKENS * tiles + extra


# An edit's form that cannot be read (its parts, or a field that prices it) is estimated
# as the most it could ask: `n` 10 and 3 partial pictures at the dearest quality and size
# (neither said), and as many input pictures as its bytes could carry, at the dearest
# size and `input_fidelity: high`. gpt-image-1 takes up to 16 pictures in an edit
# (gateway/formmedia.py), and a prompt of 32,000 characters at most (OpenAI's API
# reference, images `prompt`). A picture part takes 64 bytes at least: its delimiter
# line and Content-Disposition (`--b`, `name=image`: about 45 with their CRLFs) and the
# smallest picture file (a lossless 1x1 WebP: about 30).
_MOST_ASKED = {"n": _MOST_PICTURES, "partial_images": _MOST_PARTIAL_IMAGES}
_MOST_INPUT_PICTURES = 16
_SMALLEST_PICTURE_PART = 64
LONGEST_PICTURE_PROMPT = 32_000


def picture_usage(body: Mapping[str, Any] | None,
                  picture_sizes: Sequence[tuple[int, int] | None] | None = None,
                  form_bytes: int = 0) -> dict[str, Any]:
    """The tokens an image generation or edit may be billed, in chat's usage shape: its
    prompt's (four characters a token, as estimate.py counts text), its input pictures'
    (`picture_sizes`, an edit's, as `input_picture_tokens` prices them: image tokens) and
    its pictures (`picture_tokens`). `body` None: an edit whose form could not be read,
    the most a form of `form_bytes` could ask."""
    if body is None:
        text = -(-min(form_bytes, LONGEST_PICTURE_PROMPT) // 4)
        pictures = most_input_pictures(form_bytes) * input_picture_tokens(None, "high")
        return _tokens(text, pictures, "image_tokens", picture_tokens(_MOST_ASKED))
    prompt = body.get("prompt")
    # past the longest prompt the model takes it is Azure's 400: counted to it at most
    text = -(-min(len(prompt), LONGEST_PICTURE_PROMPT) // 4) if isinstance(prompt, str) else 0
    fidelity = body.get("input_fidelity")
    pictures = sum(input_picture_tokens(size, fidelity) for size in picture_sizes or ())
    return _tokens(text, pictures, "image_tokens", picture_tokens(body))


# dall-e-3 makes one picture a request: Azure refuses `n` past 1 (400, "You must provide
# n=1 for this model."), and bills nothing.
_ONE_PICTURE_MODELS = ("dall-e-3",)


def refused_pictures(model: str | None, usage: Mapping[str, Any]) -> bool:
    """Whether Azure refuses (400: never billed) the pictures an estimate's `usage` asks
    of `model` (the deployment's model, else the client's name for it)."""
    images = usage.get("images")
    return (type(images) is int and images > 1 and isinstance(model, str)
            and model.lower().startswith(_ONE_PICTURE_MODELS))


def most_input_pictures(form_bytes: int) -> int:
    """The most input pictures a form of `form_bytes` can carry to an edit."""
    return min(_MOST_INPUT_PICTURES, form_bytes // _SMALLEST_PICTURE_PART)


# The token-priced transcription models (gpt-4o-transcribe, gpt-4o-mini-transcribe):
# OpenAI's pricing page gives each an audio input price per 1M tokens beside an
# "estimated cost" per minute ($6.00 and $0.006 a minute; $3.00 and $0.003): 1,000
# audio tokens a minute. (Realtime audio counts 10 a second, under it.)
_AUDIO_TOKENS_PER_MINUTE = 1_000
# Their transcript: fast speech is about 4 words (6 tokens) a second; at most their
# 2,000 max output tokens (the models' pages).
_TRANSCRIPT_TOKENS_PER_SECOND = 6
_MOST_TRANSCRIPT_TOKENS = 2_000
# Their `prompt` (text that leads into the transcript) is read as text input tokens, within
# their 16,000-token context (the models' pages): the most a prompt can be billed.
_MOST_PROMPT_TOKENS = 16_000


def transcription_tokens(seconds: float) -> tuple[int, int]:
    """(audio input tokens, most output tokens) a token-priced transcription of
    `seconds` of audio may be billed."""
    audio = math.ceil(seconds * _AUDIO_TOKENS_PER_MINUTE / 60)
    return audio, min(math.ceil(seconds * _TRANSCRIPT_TOKENS_PER_SECOND),
                      _MOST_TRANSCRIPT_TOKENS)


# gpt-4o-mini-tts, a speech model priced by tokens: OpenAI's pricing gives its audio output
# per 1M tokens ($12.00) beside an "estimated cost" a minute ($0.015): 1,250 audio tokens
# a minute of speech. Where its audio's length is not known (not yet played, or a format
# whose length its bytes do not say), about 15 characters a second: 150 words a minute
# of about six characters, with the space. (One measure: 4,096 characters read by
# gpt-4o-mini-tts in 268 seconds, about 6 audio tokens a text token: 15.3 characters
# and ~20 audio tokens a second; sanand0's "OpenAI TTS cost", 2025-11-02.)
_SPEECH_TOKENS_PER_MINUTE = 1_250
_SPEECH_CHARACTERS_PER_SECOND = 15
# A budget's hold reads slower speech: 10 characters a second, and never under 0.45 s a
# word (short words: "a, b, c" read as fast as "alphabet"), so that most speech is held
# for more than it plays. Both at the request's `speed` (0.25 to 4: 0.25 plays 4x longer).
_HELD_CHARACTERS_PER_SECOND = 10
_HELD_SECONDS_PER_WORD = 0.45
_SPEEDS = (0.25, 4.0)


def speech_tokens(text_chars: int, seconds: float) -> dict[str, Any]:
    """The tokens a token-priced speech may be billed, in chat's usage shape: its text in
    (`text_chars`, its input's and its `instructions`' characters, four a token, as
    estimate.py counts text), its audio out (`seconds` of it)."""
    audio = math.ceil(seconds * _SPEECH_TOKENS_PER_MINUTE / 60)
    text = -(-text_chars // 4)
    return {"prompt_tokens": text, "completion_tokens": audio, "total_tokens": text + audio,
            "completion_tokens_details": {"audio_tokens": audio}}


def speech_text_chars(text: str, body: Mapping[str, Any] | None) -> int:
    """The characters of text a speech model reads: its input `text` and `instructions`."""
    instructions = body.get("instructions") if body else None
    return len(text) + (len(instructions) if isinstance(instructions, str) else 0)


def speech_usage(text: str, body: Mapping[str, Any] | None, held: bool = False
                 ) -> dict[str, Any]:
    """A speech's usage before its audio is heard: the `characters` of its input `text`
    (tts's unit) and the tokens a token-priced model bills (`speech_tokens`, its audio's
    length estimated from its input's characters at its `speed`; `held`: a budget's
    hold, read slower, `_HELD_CHARACTERS_PER_SECOND`)."""
    speed = body.get("speed") if body else None
    if isinstance(speed, bool) or not isinstance(speed, int | float) or speed != speed:
        speed = 1.0  # not a number: Azure's 400, or its default
    speed = min(max(float(speed), _SPEEDS[0]), _SPEEDS[1])
    if held:
        seconds = max(len(text) / _HELD_CHARACTERS_PER_SECOND,
                      len(text.split()) * _HELD_SECONDS_PER_WORD) / speed
    else:
        seconds = len(text) / _SPEECH_CHARACTERS_PER_SECOND / speed
    return {"characters": len(text),
            ESTIMATED_TOKENS: speech_tokens(speech_text_chars(text, body), seconds)}


# The usage key under which an unanswered unit-priced request carries the tokens it may
# be billed beside its units (gpt-image-1's pictures, a token-priced transcription's
# audio): which model ran is not known here, and a model billed by the unit (dall-e-3,
# whisper: their token rates are 0) would price them at $0 as its usage's own counts.
# The ledger prices it by these where the model's token rates price them, else by its
# units: Azure bills it once, in one (governance/prices.py `PriceTable.billed_cost`).
ESTIMATED_TOKENS = "estimated_tokens"
TRANSCRIBING = frozenset({"audio/transcriptions", "audio/translations"})


def unanswered_units(body: Mapping[str, Any] | None, operation: str,
                     audio_seconds: float | None = None,
                     picture_sizes: Sequence[tuple[int, int] | None] | None = None,
                     form_bytes: int = 0) -> dict[str, Any] | None:
    """The usage of a unit-priced request (pictures, speech, a transcription) Azure
    received and never answered, in the units the ledger prices its answer by, flagged
    `"estimated": True`; None when nothing it asks can be counted.

    A best estimate where the request says what it asks (the pictures' `n`, size and
    quality; speech's characters; an edit's pictures read from their headers: what Azure
    bills is a function of these), an upper bound where only that is known, recorded as
    the estimate all the same, flagged: a transcription's seconds (`audio_seconds`, the
    caller's: the length its header states, within the hold's bound, else that bound;
    gateway/formmedia.py `audio_length`), its transcript (fast speech) and its
    `prompt`'s text (a token-priced model's input, four characters a token, as
    estimate.py counts text, within the model's context); gpt-image-1's pictures of an
    `auto` or unknown quality or size (held as the dearest, as `picture_tokens` does);
    an image form that could not be read (`body` None), the most it could ask
    (`picture_usage`, within its `form_bytes`).
    Azure finishes non-streamed work whose client left and bills it: $0 was never right."""
    if operation == "audio/speech":
        text = body.get("input") if body else None
        if not isinstance(text, str) or not text:
            return None
        return {**speech_usage(text, body), "estimated": True}
    if operation in TRANSCRIBING:
        if not audio_seconds:
            return None
        audio, transcript = transcription_tokens(audio_seconds)
        prompt = body.get("prompt") if body else None
        text = min(-(-len(prompt) // 4), _MOST_PROMPT_TOKENS) if isinstance(prompt, str) else 0
        return {"audio_seconds": float(audio_seconds), "estimated": True,
                ESTIMATED_TOKENS: _tokens(text, audio, "audio_tokens", transcript)}
    if not operation.startswith("images/"):
        return None
    usage: dict[str, Any]
    if body is None:  # a form not read: the most pictures, of a size and quality not known
        usage = {"images": _MOST_PICTURES, "size": "unknown", "quality": None,
                 "estimated": True}
    else:
        size, quality = body.get("size"), body.get("quality")
        usage = {"images": _pictures(body), "estimated": True,
                 "size": size if size is None or isinstance(size, str) else "unknown",
                 "quality": quality if quality is None or isinstance(quality, str)
                 else "unknown"}
    if operation != "images/variations":  # dall-e-2's, billed by the picture alone
        usage[ESTIMATED_TOKENS] = picture_usage(body, picture_sizes, form_bytes)
    return usage


def _tokens(text: int, media: int, modality: str, completion: int) -> dict[str, Any]:
    """A usage object (chat's shape) of `text` and `media` tokens in, `completion` out."""
    prompt = text + media
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {modality: media}}
