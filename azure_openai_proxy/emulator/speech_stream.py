"""A speech asked with `stream_format: "sse"` (audio/speech), answered as OpenAI does:
server-sent events of the audio in base64, then its usage.

What is known, and from where (read 2026-12-06):

- OpenAI's API reference ("Create speech", and its "Stream audio" events; the OpenAPI
  spec's `CreateSpeechResponseStreamEvent`): `stream_format` is `sse` or `audio` (the
  default); "`sse` is not supported for `tts-1` or `tts-1-hd`". The answer is
  `text/event-stream` of `speech.audio.delta` events (`type`, `audio`: a chunk of
  base64-encoded audio) and a last `speech.audio.done` (`type`, `usage`: `input_tokens`,
  `output_tokens`, `total_tokens`, all three required). The official SDK (openai
  2.x's `SpeechCreateParams.stream_format: Literal["sse", "audio"]`) sends it and reads
  the answer as bytes.
- What tts-1 does with `sse`: a measurement (sfortis/openai_tts pull request 73,
  2026-09-05, one request a model) found `tts-1` and `tts-1-hd` answer HTTP 200 with
  raw audio, the field ignored, and `gpt-4o-mini-tts` `data: {"type":
  "speech.audio.delta",...}`. No source gives an error message for it: the emulator
  ignores the field on a tts deployment, as measured.
- An explicit `stream_format: null` (read 2026-12-07): the spec's field (openai-openapi
  `openapi.yaml` at f85dbe2, `CreateSpeechRequest.stream_format`: `type: string`, the
  enum, `default: audio`) is not nullable, where 111 of its fields say `nullable: true`,
  and the SDK's `Literal["sse", "audio"]` has no None (a field left out is omitted).
  OpenAI answers null in a field that takes none with a 400 ("Invalid type for
  'input[n].content': expected ..., but got null instead", QuantumNous/new-api issue
  4776), not as if it were absent: the emulator's 400 stands.

Not confirmed, and what the emulator does meanwhile:

- `event:` lines and a closing `data: [DONE]`: the measurement shows a stream starting
  with `data:`; the emulator sends `data:` lines only and no `[DONE]` (the gateway reads
  the events by their `type`, either way).
- The usage's counts: the input's and `instructions`' tokens in, and the audio's out at
  1,250 tokens a minute (OpenAI's $0.015 a minute at $12 per 1M), of the audio the
  emulator makes (`media.speech_seconds`): what the gateway estimates for an answer
  that carries no usage.
- Azure's api-versions: no Azure source mentions `stream_format`; the emulator takes it
  wherever it takes the speech operation.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping

import orjson

from azure_openai_proxy.emulator import media
from azure_openai_proxy.emulator.textgen import count_tokens

__all__ = ["FORMATS", "events", "speech_usage", "streams"]

FORMATS = ("sse", "audio")
# Audio bytes a delta event carries (base64 of them): a few events for a short speech.
_CHUNK = 16 * 1024
_TOKENS_PER_MINUTE = 1_250


def streams(model: str, stream_format: object) -> bool:
    """Whether a speech of `model` asked with `stream_format` is answered as events: a
    gpt-4o-mini-tts one asked `sse` (tts-1 and tts-1-hd ignore it, see above)."""
    return stream_format == "sse" and not model.startswith("tts")


def speech_usage(text: str, instructions: str, speed: float) -> dict[str, int]:
    """The usage a streamed speech's done event carries."""
    seconds = media.speech_seconds(text, speed)
    tokens_in = count_tokens(text) + count_tokens(instructions)
    tokens_out = math.ceil(seconds * _TOKENS_PER_MINUTE / 60)
    return {"input_tokens": tokens_in, "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out}


def events(audio: bytes, usage: dict[str, int]) -> Iterator[tuple[bytes, int]]:
    """The stream's frames and the audio tokens each takes to make: `audio` in deltas
    of `_CHUNK` bytes, then the done event."""
    size = max(1, len(audio))
    for start in range(0, len(audio), _CHUNK):
        chunk = audio[start:start + _CHUNK]
        delta = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
        yield _frame(delta), max(1, usage["output_tokens"] * len(chunk) // size)
    yield _frame({"type": "speech.audio.done", "usage": usage}), 0


def _frame(event: Mapping[str, object]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"
