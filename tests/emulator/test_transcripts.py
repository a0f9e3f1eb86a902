from __future__ import annotations

from azure_openai_proxy.emulator.media import tone_samples, wav
from azure_openai_proxy.emulator.transcripts import render, transcribe

AUDIO = wav(tone_samples(4.0))


def test_transcript_is_stable_and_follows_duration() -> None:
    first = transcribe(AUDIO)
    assert first == transcribe(AUDIO)
    assert first.duration == 4.0 and len(first.words) == 10
    assert first.segments[-1].end == 4.0 and first.segments[0].start == 0.0
    assert transcribe(wav(tone_samples(1.0))).text != first.text


def test_formats() -> None:
    transcript = transcribe(AUDIO)
    kind, body = render(transcript, "json", task="transcribe", language="en",
                        word_timestamps=False)
    assert kind == "application/json" and body == {"text": transcript.text}
    kind, verbose = render(transcript, "verbose_json", task="translate", language="english",
                           word_timestamps=True)
    assert verbose["task"] == "translate" and len(verbose["words"]) == 10
    assert verbose["segments"][0]["text"].strip() == transcript.segments[0].text
    kind, srt = render(transcript, "srt", task="transcribe", language="en", word_timestamps=False)
    assert kind.startswith("text/plain")
    assert srt.splitlines()[:2] == ["1", "00:00:00,000 --> 00:00:04,000"]
    _, vtt = render(transcript, "vtt", task="transcribe", language="en", word_timestamps=False)
    assert vtt.splitlines()[:3] == ["WEBVTT", "", "00:00:00.000 --> 00:00:04.000"]
    _, text = render(transcript, "text", task="transcribe", language="en", word_timestamps=False)
    assert text == transcript.text + "\n"
