"""The openai SDK parses audio and image answers; the bytes are real containers."""

from __future__ import annotations

import base64
import io
import wave

import pytest
from openai import AzureOpenAI, BadRequestError, NotFoundError
from PIL import Image

from azure_openai_proxy.emulator.media import tone_samples, wav
from tests.emulator.conftest import GA, KEY, PREVIEW, call
from tests.support import ServerThread

AUDIO = wav(tone_samples(2.0))


def azure(srv: ServerThread, version: str = PREVIEW) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=srv.url, api_key=KEY, api_version=version, max_retries=0)


def test_transcription_json_and_verbose(srv: ServerThread) -> None:
    client = azure(srv, GA)
    plain = client.audio.transcriptions.create(model="whisper", file=("a.wav", AUDIO))
    assert plain.text and plain.text == client.audio.transcriptions.create(
        model="whisper", file=("a.wav", AUDIO)).text
    verbose = client.audio.transcriptions.create(
        model="whisper", file=("a.wav", AUDIO), response_format="verbose_json",
        timestamp_granularities=["word", "segment"], language="en")
    assert verbose.duration == pytest.approx(2.0)
    assert verbose.text == plain.text and verbose.language == "en"
    assert verbose.segments and verbose.segments[-1].end == pytest.approx(2.0)
    assert verbose.words and verbose.words[0].start == 0.0


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_transcription_text_formats(srv: ServerThread, fmt: str) -> None:
    raw = azure(srv, GA).audio.transcriptions.with_raw_response.create(
        model="whisper", file=("a.wav", AUDIO), response_format=fmt)  # type: ignore[call-overload]
    assert raw.headers["content-type"].startswith("text/plain")
    text = raw.http_response.text
    if fmt == "srt":
        assert text.startswith("1\n00:00:00,000 --> ")
    elif fmt == "vtt":
        assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    else:
        assert text.endswith("\n") and "-->" not in text


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translation(srv: ServerThread) -> None:
    result = azure(srv, GA).audio.translations.create(model="whisper", file=("a.wav", AUDIO))
    assert result.text


def test_speech_formats_are_real_containers(srv: ServerThread) -> None:
    client = azure(srv)
    wav_bytes = client.audio.speech.create(model="tts", voice="alloy", input="Hello there world",
                                           response_format="wav").read()
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        assert reader.getframerate() == 24000 and reader.getnframes() > 10000
    mp3 = client.audio.speech.create(model="tts", voice="alloy", input="Hello").read()
    assert mp3[:2] == b"\xff\xf3"
    assert client.audio.speech.create(model="tts", voice="nova", input="Hi",
                                      response_format="flac").read()[:4] == b"fLaC"
    assert client.audio.speech.create(model="tts", voice="nova", input="Hi",
                                      response_format="opus").read()[:4] == b"OggS"


def test_speech_is_preview_only(srv: ServerThread) -> None:
    with pytest.raises(NotFoundError):
        azure(srv, GA).audio.speech.create(model="tts", voice="alloy", input="x")


def test_image_generation_b64_and_url(srv: ServerThread) -> None:
    client = azure(srv, GA)
    result = client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1024x1024",
                                    response_format="b64_json")
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert image.size == (1024, 1024)
    assert result.data[0].revised_prompt == "a lighthouse"
    by_url = client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1792x1024")
    url = by_url.data[0].url or ""
    fetched = call(srv.url, "GET", url[len(srv.url):])
    assert fetched.status == 200 and Image.open(io.BytesIO(fetched.body)).size == (1792, 1024)
    with pytest.raises(BadRequestError):
        client.images.generate(model="dall-e-3", prompt="x", n=2)


def test_image_edit(srv: ServerThread) -> None:
    source = io.BytesIO()
    Image.new("RGB", (8, 8)).save(source, "PNG")
    result = azure(srv).images.edit(model="dall-e-3", image=("in.png", source.getvalue()),
                                    prompt="make it blue", size="1024x1024")
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or ""))).size == (
        1024, 1024)
