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


def _webm(info_children: bytes, before_info: bytes = b"") -> bytes:
    """A WebM head: the EBML header, a Segment of unknown size, `before_info` (a SeekHead,
    a Void), its Info holding `info_children`, then a Cluster's start."""
    ebml = b"\x1a\x45\xdf\xa3\x87" + b"\x42\x82\x84webm"
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
    info = b"\x15\x49\xa9\x66" + bytes([0x80 | len(info_children)]) + info_children
    cluster = b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff" + bytes(64)
    return ebml + segment + before_info + info + cluster


def test_a_webms_duration_is_read_from_its_info_past_other_elements() -> None:
    import struct

    seek_head = b"\x11\x4d\x9b\x74\x86" + bytes(6)
    void = b"\xec\x83" + b"\x44\x89\x84"  # bytes that read like a Duration, in a Void
    scale = b"\x2a\xd7\xb1\x83\x0f\x42\x40"  # 1,000,000 ns: milliseconds
    duration = b"\x44\x89\x88" + struct.pack(">d", 95_000.0)
    head = _webm(scale + duration, seek_head + void)
    assert audio_length(head, 500_000) == pytest.approx(95.0)  # 42 kbit/s
    # a scale of 10 ms a tick
    head = _webm(b"\x2a\xd7\xb1\x83\x98\x96\x80" + b"\x44\x89\x84" + struct.pack(">f", 9_500.0))
    assert audio_length(head, 500_000) == pytest.approx(95.0)


def test_a_stated_length_is_never_under_its_size_at_its_kinds_fastest() -> None:
    import struct

    # a Duration of 1 s on 10 MB of WebM: Opus runs at 510 kbit/s at most
    head = _webm(b"\x44\x89\x84" + struct.pack(">f", 1_000.0))
    assert audio_length(head, 10_000_000) == pytest.approx(10_000_000 * 8 / 512_000)
    # an MP3's Xing count of 1 on 10 MB: no MPEG frame runs past 448 kbit/s
    xing = bytes(32) + b"Xing" + (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
    first = b"\xff\xfb\x90\x00" + xing + bytes(413 - len(xing))
    assert audio_length(first + _FRAME * 4, 10_000_000) == pytest.approx(
        10_000_000 * 8 / 448_000)
    # an honest Xing count is the length: 2,000 frames of 1,152 samples at 44.1 kHz
    xing = bytes(32) + b"Xing" + (1).to_bytes(4, "big") + (2_000).to_bytes(4, "big")
    first = b"\xff\xfb\x90\x00" + xing + bytes(413 - len(xing))
    assert audio_length(first + _FRAME * 4, 2_000 * 417) == pytest.approx(2_000 * 1152 / 44_100)
