"""The streamed speech's meter (gateway/answerusage.py `SpeechStreamMeter`) and the
emulator's events (emulator/speech_stream.py): plain bytes in, usage out."""

from __future__ import annotations

import base64

import orjson
import pytest

from azure_openai_proxy.emulator import speech_stream
from azure_openai_proxy.gateway.answerusage import SpeechMeter, SpeechStreamMeter
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS, speech_usage

_TEXT = "hello world " * 50  # 600 characters: 150 text tokens, 40 s at 15 a second


def _delta(audio: bytes) -> bytes:
    return b"data: " + orjson.dumps(
        {"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()}) + b"\n\n"


_DONE = (b'data: {"type":"speech.audio.done","usage":'
         b'{"input_tokens":150,"output_tokens":700,"total_tokens":850}}\n\n')


def _meter(response_format: str = "pcm") -> SpeechStreamMeter:
    return SpeechStreamMeter(SpeechMeter(_TEXT, {"input": _TEXT,
                                                 "response_format": response_format}))


def test_the_done_events_usage_is_recorded_measured_its_output_as_audio() -> None:
    meter = _meter()
    stream = _delta(b"\0" * 4800) * 3 + _DONE
    for start in range(0, len(stream), 7):  # however it is cut
        meter.feed(stream[start:start + 7])
    assert meter.recorded() == {
        "input_tokens": 150, "output_tokens": 700, "total_tokens": 850,
        "output_tokens_details": {"audio_tokens": 700}}


def test_event_lines_and_a_done_marker_change_nothing() -> None:
    meter = _meter()
    meter.feed(b"event: speech.audio.delta\n" + _delta(b"\0" * 10))
    meter.feed(b"event: speech.audio.done\n" + _DONE + b"data: [DONE]\n\n")
    assert meter.recorded()["output_tokens"] == 700
    assert "estimated" not in meter.recorded()


def test_a_stream_cut_before_done_is_the_characters_estimate_flagged() -> None:
    meter = _meter()
    meter.feed(_delta(b"\0" * 48_000))  # one second of pcm
    usage = meter.recorded()
    assert usage == {**speech_usage(_TEXT, {"input": _TEXT}), "estimated": True}
    assert usage[ESTIMATED_TOKENS]["completion_tokens"] == 834  # 40 s at 1,250 a minute


def test_a_cut_stream_whose_audio_is_longer_is_estimated_from_its_audio() -> None:
    meter = _meter()
    for _ in range(60):
        meter.feed(_delta(b"\0" * 48_000))  # 60 s of pcm, past the 40 s its text says
    usage = meter.recorded()
    assert usage["estimated"] is True
    assert usage[ESTIMATED_TOKENS] == {
        "prompt_tokens": 150, "completion_tokens": 1250, "total_tokens": 1400,
        "completion_tokens_details": {"audio_tokens": 1250}}


@pytest.mark.parametrize("event", [
    b'data: {"type":"speech.audio.delta","audio":"not base64!"}\n\n',
    b'data: {"type":"speech.audio.delta"}\n\n',
    b'data: ["speech.audio.delta"]\n\n',
    b'data: {"type":"speech.audio.done","usage":{"input_tokens":-1,"output_tokens":5}}\n\n',
    b'data: {"type":"speech.audio.done","usage":{"input_tokens":1,"output_tokens":true}}\n\n',
    b'data: {"type":"speech.audio.done","usage":[1,2]}\n\n',
    b'data: {"type":"speech.audio.done"\n\n',
])
def test_what_openai_does_not_send_counts_nothing_and_is_estimated(event: bytes) -> None:
    meter = _meter()
    meter.feed(event)
    assert meter.recorded() == {**speech_usage(_TEXT, {"input": _TEXT}), "estimated": True}


def test_the_emulators_stream_carries_its_audio_and_its_usage() -> None:
    audio = bytes(range(256)) * 200  # 51,200 bytes: four deltas
    usage = speech_stream.speech_usage(_TEXT, "Speak slowly.", 1.0)
    # 100 words and 3 of instructions in; the emulator's 35 s of speech at 1,250 a minute
    assert usage == {"input_tokens": 103, "output_tokens": 730, "total_tokens": 833}
    frames = list(speech_stream.events(audio, usage))
    events = [orjson.loads(frame[6:-2]) for frame, _ in frames]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 4 + ["speech.audio.done"]
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == audio
    assert events[-1]["usage"] == usage
    assert all(frame.startswith(b"data: {") and frame.endswith(b"}\n\n") for frame, _ in frames)


def test_the_emulator_streams_sse_for_gpt_4o_mini_tts_only() -> None:
    assert speech_stream.streams("gpt-4o-mini-tts-2025-03-20", "sse")
    assert not speech_stream.streams("gpt-4o-mini-tts-2025-03-20", "audio")
    assert not speech_stream.streams("tts-001", "sse")
    assert not speech_stream.streams("tts-hd-001", "sse")
