from __future__ import annotations

import io
import struct
import wave

from PIL import Image

from azure_openai_proxy.emulator import media


def test_crc_check_values_match_the_standards() -> None:
    # The published check values of CRC-8 (FLAC), CRC-16/UMTS (FLAC) and Ogg's CRC-32.
    assert media._crc8(b"123456789") == 0xF4
    assert media._crc16(b"123456789") == 0xFEE8
    assert media._ogg_crc(b"123456789") == 0x89A1897F


def test_wav_is_readable_and_its_duration_known() -> None:
    data = media.wav(media.tone_samples(1.5))
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 24000)
        assert reader.getnframes() == 36000
    assert media.wav_duration(data) == 1.5
    assert media.wav_duration(b"not a wav file at all, just some bytes here!!") is None


def test_pcm_is_raw_samples() -> None:
    data = media.speech("pcm", "one two three")
    assert len(data) % 2 == 0 and not data.startswith(b"RIFF")
    assert len(data) // 2 == int(media.speech_seconds("one two three") * 24000)


def test_mp3_frames_are_back_to_back_mpeg2_layer3() -> None:
    data = media.mp3(1.0)
    assert len(data) % 96 == 0
    for offset in range(0, len(data), 96):
        assert data[offset : offset + 4] == b"\xff\xf3\x44\xc4"
    assert len(data) // 96 * 576 >= 24000


def test_aac_adts_frames() -> None:
    data = media.aac(0.5)
    frame_length = ((data[3] & 0x03) << 11) | (data[4] << 3) | (data[5] >> 5)
    assert data[:2] == b"\xff\xf1" and frame_length == 11 and len(data) % 11 == 0
    assert (data[2] >> 2) & 0x0F == 6  # 24 kHz


def test_flac_stream_structure_and_frame_crcs() -> None:
    samples = media.tone_samples(0.5)
    data = media.flac(samples, block=4096)
    assert data[:4] == b"fLaC" and data[4] == 0x80 and data[7] == 34
    info = int.from_bytes(data[18:26], "big")
    assert info >> 44 == 24000 and info & ((1 << 36) - 1) == len(samples)
    position, frames = 42, 0
    while position < len(data):
        size = len(data) - position if frames == 2 else 4 + 1 + 2 + 1 + 1 + 4096 * 2 + 2
        frame = data[position : position + size]
        assert frame[:2] == b"\xff\xf8"
        assert struct.unpack(">H", frame[-2:])[0] == media._crc16(frame[:-2])
        position += size
        frames += 1
    assert frames == 3  # 12000 samples in blocks of 4096


def test_ogg_opus_pages() -> None:
    data = media.opus(0.1)
    assert data.count(b"OggS") == 3
    assert b"OpusHead" in data and b"OpusTags" in data
    last = data.rindex(b"OggS")
    assert data[last + 5] == 0x04  # end of stream
    assert struct.unpack_from("<q", data, last + 6)[0] == 312 + 5 * 960


def test_png_opens_with_the_right_size_and_colour() -> None:
    image = Image.open(io.BytesIO(media.png(40, 20, (1, 2, 3))))
    assert image.size == (40, 20) and image.getpixel((5, 5)) == (1, 2, 3)
