"""Transcriptions and translations of uploaded audio, in every `response_format`. Pure.

The "heard" text is derived from the audio bytes, so the same file always gives
the same transcript; its length follows the audio's duration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from azure_openai_proxy.emulator.media import wav_duration
from azure_openai_proxy.emulator.textgen import generate_tokens

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_WORDS_PER_SECOND = 2.5
_SEGMENT_WORDS = 12


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float
    segments: tuple[Segment, ...]
    words: tuple[tuple[str, float, float], ...]


def transcribe(audio: bytes, prompt: str = "") -> Transcript:
    """What the emulated Whisper hears in `audio` (WAV durations are read exactly)."""
    duration = wav_duration(audio)
    if duration is None:
        duration = max(1.0, len(audio) / 16_000)  # about 128 kbit/s for compressed formats
    count = max(3, min(400, round(duration * _WORDS_PER_SECOND)))
    tokens = generate_tokens(hashlib.sha256(audio).hexdigest() + prompt, None, count)
    words = [t.strip() for t in tokens]
    per_word = duration / len(words)
    timed = tuple(
        (word, round(i * per_word, 2), round((i + 1) * per_word, 2)) for i, word in enumerate(words)
    )
    segments = []
    for start in range(0, len(tokens), _SEGMENT_WORDS):
        piece = tokens[start : start + _SEGMENT_WORDS]
        end = min(len(tokens), start + _SEGMENT_WORDS)
        segments.append(Segment(timed[start][1], timed[end - 1][2], "".join(piece).strip()))
    return Transcript("".join(tokens).strip(), round(duration, 2), tuple(segments), timed)


def render(
    transcript: Transcript, fmt: str, *, task: str, language: str, word_timestamps: bool
) -> tuple[str, Any]:
    """(content type, body) for `fmt`; JSON bodies are dicts, the others text."""
    if fmt == "text":
        return "text/plain; charset=utf-8", transcript.text + "\n"
    if fmt == "srt":
        return "text/plain; charset=utf-8", _subtitles(transcript, srt=True)
    if fmt == "vtt":
        return "text/plain; charset=utf-8", _subtitles(transcript, srt=False)
    if fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": task,
            "language": language,
            "duration": transcript.duration,
            "text": transcript.text,
            "segments": [_segment_json(i, s) for i, s in enumerate(transcript.segments)],
        }
        if word_timestamps:
            body["words"] = [{"word": w, "start": s, "end": e} for w, s, e in transcript.words]
        return "application/json", body
    return "application/json", {"text": transcript.text}


def _segment_json(index: int, segment: Segment) -> dict[str, Any]:
    return {
        "id": index,
        "seek": 0,
        "start": segment.start,
        "end": segment.end,
        "text": " " + segment.text,
        "tokens": [50364 + index],
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.3,
        "no_speech_prob": 0.01,
    }


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _subtitles(transcript: Transcript, *, srt: bool) -> str:
    lines = [] if srt else ["WEBVTT", ""]
    sep = "," if srt else "."
    for index, segment in enumerate(transcript.segments, start=1):
        if srt:
            lines.append(str(index))
        lines.append(f"{_stamp(segment.start, sep)} --> {_stamp(segment.end, sep)}")
        lines.extend([segment.text, ""])
    return "\n".join(lines) + "\n"
