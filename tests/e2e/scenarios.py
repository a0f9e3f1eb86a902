"""SDK scenarios that several gateway variants (server engine, upstream client) run the
same way; each test adds what its variant must show on top."""

from __future__ import annotations

import io
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_gateway_routes import assert_reached_azure


def streamed_chat(client: Any) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert chunks[-1].choices[0].finish_reason == "stop"


def spoken_then_transcribed(client: Any, emulator: Emulator) -> tuple[bytes, dict[str, Any]]:
    """Speech from the emulator, sent back as a multipart upload; the WAV and the log
    entry of the upload as Azure received it."""
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world",
                                     response_format="wav").read()
    assert wav[:4] == b"RIFF"
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", io.BytesIO(wav), "audio/wav")
    )
    assert isinstance(text.text, str) and text.text
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/deployments/whisper/audio/transcriptions")
    return wav, entry
