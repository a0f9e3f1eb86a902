"""A transcription never answered is recorded at its audio's length as its header
states it (`audio_length`), not at the hold's upper bound (session 20's review: an MP3
at 8 kbit/s, ~16x a 128 kbit/s file; Ogg/WebM/MP4 ~1,000x)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.mediasize import audio_length, audio_seconds

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes a frame
_FRAME = b"\xff\xfb\x90\x00" + bytes(413)


def test_a_cbr_mp3_is_its_size_at_its_bitrate() -> None:
    head = _FRAME * 8
    size = 60 * 128_000 // 8  # a minute at 128 kbit/s
    assert audio_length(head, size) == pytest.approx(60.0, rel=0.01)
    assert audio_seconds(head, size) > 15 * 60  # the hold's bound: on main, recorded


def test_flac_is_its_total_samples() -> None:
    packed = (44_100 << 44) | (1 << 41) | (15 << 36) | (44_100 * 30)
    head = b"fLaC" + b"\x80\x00\x00\x22" + bytes(10) + packed.to_bytes(8, "big") + bytes(16)
    assert audio_length(head, 2_000_000) == pytest.approx(30.0)


def test_a_header_that_states_nothing_is_none() -> None:
    assert audio_length(b"OggS" + bytes(60), 100_000) is None
