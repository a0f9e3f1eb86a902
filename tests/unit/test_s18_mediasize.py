"""governance/mediasize.py: how long audio can play and how large a picture is, from the
first bytes of a file, with plain bytes: a PCM WAV's exactly, every other file's bounded
from its size (no header's claim of length is read: test_s18_mediasize2.py), and never an
exception, whatever the bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.emulator import media
from azure_openai_proxy.governance.mediasize import (
    HEAD_BYTES,
    audio_seconds,
    id3_length,
    picture_size,
)
from tests.support import silent_wav


def seconds_of(data: bytes) -> float:
    """As the gateway reads a file: its first `HEAD_BYTES` after any ID3 tag, and its
    whole size."""
    skip = id3_length(data[:HEAD_BYTES])
    return audio_seconds(data[skip:skip + HEAD_BYTES], len(data))


# -- WAV ------------------------------------------------------------------------------


def _wav(data_size: int | None, payload: bytes, *, rate: int = 8000, channels: int = 1,
         bits: int = 16, byte_rate: int | None = None, before: bytes = b"",
         tag: int = 1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate,
                      rate * block if byte_rate is None else byte_rate, block, bits)
    size = len(payload) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + before
            + b"data" + struct.pack("<I", size) + payload)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_wav_plays_its_data_over_its_byte_rate() -> None:
    assert seconds_of(silent_wav(2)) == 2.0
    assert seconds_of(silent_wav(0.1)) == pytest.approx(0.1)
    stereo = _wav(None, bytes(44_100 * 4 * 3), rate=44_100, channels=2)
    assert seconds_of(stereo) == pytest.approx(3.0)
    # a chunk before `data` (LIST) is skipped over
    listed = _wav(None, bytes(16_000), before=b"LIST" + struct.pack("<I", 5) + b"abcde\0")
    assert seconds_of(listed) == pytest.approx(1.0)


@pytest.mark.parametrize("stated", [0, 0xFFFFFFFF, 10**9])
def test_a_wav_whose_data_size_is_unknown_or_past_the_end_holds_what_the_file_holds(
        stated: int) -> None:
    # a writer that streamed it (0, or all ones), or a truncated file: its bytes count
    assert seconds_of(_wav(stated, bytes(32_000))) == pytest.approx(2.0)


def test_a_wav_holds_the_lower_of_its_stated_and_its_computed_byte_rate() -> None:
    # a byte rate that lies high would hold it at nothing: the sample rate and block
    # size say 16,000 bytes a second
    assert seconds_of(_wav(None, bytes(32_000), byte_rate=10**9)) == pytest.approx(2.0)
    # a compressed WAV (IMA ADPCM, 0x11): its stated (average) rate is a claim, the
    # size floor holds it
    adpcm = _wav(None, bytes(8_000), tag=0x11, bits=4, byte_rate=4_000)
    assert seconds_of(adpcm) == pytest.approx(8_000 * 8 / 60)  # its data's bytes


def test_a_malformed_wav_is_bounded_from_its_size() -> None:
    no_rate = _wav(None, bytes(1000), byte_rate=0, rate=0)
    assert seconds_of(no_rate) == pytest.approx(1000 * 8 / 60)
    truncated = silent_wav(2)[:30]  # RIFF, WAVE, half the fmt chunk
    assert seconds_of(truncated) == pytest.approx(30 * 8 / 60)
    # `data` past the first bytes (a long chunk before it): all of it at its rate
    long_list = b"LIST" + struct.pack("<I", HEAD_BYTES) + bytes(HEAD_BYTES)
    wav = _wav(None, bytes(16_000), before=long_list)
    assert seconds_of(wav) == pytest.approx(len(wav) / 16_000)


# -- MP3 ------------------------------------------------------------------------------

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono, no CRC, no padding: 417-byte frames of
# 1,152 samples.
_MPEG1_128 = bytes((0xFF, 0xFB, 0x90, 0xC0))
_FRAME = 144 * 128_000 // 44_100


def _frames(count: int, first: bytes | None = None) -> bytes:
    frame = _MPEG1_128 + bytes(_FRAME - 4)
    return (first if first is not None else frame) + frame * (count - 1)


def test_an_mp3_is_held_at_mpeg_audios_lowest_bitrate() -> None:
    mp3 = _frames(2_400)  # 62.7 s at 128 kbit/s: bounded at MPEG audio's lowest, 7.96 kbit/s
    assert seconds_of(mp3) == pytest.approx(len(mp3) * 8 / 7_962)
    # the emulator's speech: MPEG-2 Layer III at 32 kbit/s, bounded at 8 kbit/s
    speech = media.mp3(10)
    assert seconds_of(speech) == pytest.approx(len(speech) * 8 / 7_962)


def test_an_id3_tag_is_skipped_however_long() -> None:
    picture = bytes(100_000)  # a cover picture: the tag is longer than the first bytes
    size = len(picture)
    tag = b"ID3\x04\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F,
                                      size & 0x7F)) + picture
    assert id3_length(tag) == 10 + size
    mp3 = tag + _frames(2_400)  # its first frame found past the tag; the tag counted
    assert seconds_of(mp3) == pytest.approx(len(mp3) * 8 / 7_962)
    assert id3_length(b"ID3\x04\x00\x00\x80\x00\x00\x00") == 0  # not synchsafe


def test_a_lone_sync_pattern_in_other_bytes_is_no_frame() -> None:
    noise = bytes(1000) + _MPEG1_128 + bytes(5000)  # no second frame where it says
    assert seconds_of(noise) == pytest.approx(len(noise) * 8 / 60)


# -- FLAC, MP4, the rest --------------------------------------------------------------


def _flac(rate: int, channels: int, bits: int, total: int, payload: bytes) -> bytes:
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes((0x80, 0, 0, 34)) + info + payload


def test_flac_is_held_a_day_whatever_its_streaminfo_says() -> None:
    # its frames may state their own sample rate, down to 1 Hz: no size bounds it
    for total in (16_000 * 3600, 0, 16):
        assert seconds_of(_flac(16_000, 1, 16, total, bytes(4000))) == 86_400


def _mp4(timescale: int, duration: int, payload: bytes, version: int = 0) -> bytes:
    ftyp = struct.pack(">I", 20) + b"ftypM4A " + struct.pack(">I", 0) + b"M4A "
    if version == 1:
        body = bytes((1, 0, 0, 0)) + bytes(16) + struct.pack(">IQ", timescale, duration)
    else:
        body = bytes(4) + bytes(8) + struct.pack(">II", timescale, duration)
    mvhd = struct.pack(">I", 8 + len(body) + 80) + b"mvhd" + body + bytes(80)
    moov = struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd
    return ftyp + moov + payload


def test_an_mp4_is_held_at_its_size_whatever_its_movie_header_says() -> None:
    for mp4 in (_mp4(1000, 90_000, bytes(50_000)), _mp4(1000, 1, bytes(50_000), version=1),
                struct.pack(">I", 20) + b"ftypM4A " + bytes(8) + bytes(50_000)):
        assert seconds_of(mp4) == pytest.approx(len(mp4) * 8 / 60)  # Opus in MP4: 67 bit/s


def _vorbis_ident(rate: int, blocks: int) -> bytes:
    return b"\x01vorbis" + bytes(4) + bytes((1,)) + struct.pack("<I", rate) + bytes(12) + bytes(
        (blocks, 1))


def test_ogg_vorbis_is_held_at_its_smallest_packets_for_its_longer_block() -> None:
    # 8 kHz, blocks of 256 and 8,192 samples: a 2-byte packet per 4,096 samples, 31 bit/s
    ogg = b"OggS" + bytes(24) + _vorbis_ident(8000, 0xD8) + bytes(100_000)
    assert seconds_of(ogg) == pytest.approx(len(ogg) * 8 / (16 * 8000 / 4096))
    # a header that would raise the floor (a planted one, 192 kHz in blocks of 64) does
    # not; one whose values no stream holds is a day
    for blocks, held in ((0x66, len(ogg) * 8 / 120), (0x06, 86_400), (0x00, 86_400)):
        planted = b"OggS" + bytes(24) + _vorbis_ident(192_000, blocks) + bytes(100_000)
        assert seconds_of(planted) == pytest.approx(held)


def test_flac_in_a_container_is_held_a_day() -> None:
    webm = b"\x1a\x45\xdf\xa3" + bytes(20) + b"fLaC" + bytes((0, 0, 0, 34)) + bytes(100_000)
    ogg = b"OggS" + bytes(24) + b"\x7fFLAC\x01\x00\x00\x01fLaC" + bytes(100_000)
    assert seconds_of(webm) == seconds_of(ogg) == 86_400


def test_an_mp4_of_a_lossless_codec_is_held_a_day() -> None:
    m4a = _mp4(1000, 1000, b"stsd" + bytes(12) + b"alac" + bytes(50_000))
    assert seconds_of(m4a) == 86_400


@pytest.mark.parametrize(("head", "floor"), [
    (b"OggS" + bytes(24) + b"OpusHead", 120),
    (b"OggS" + bytes(24) + b"Speex   ", 120),
    (b"\x1a\x45\xdf\xa3", 60),  # WebM (Matroska's lacing: session 18's review)
    (b"\x1a\x45\xdf\xa3\x44\x89\x84" + struct.pack(">f", 1.0), 60),  # its Duration: unread
    (b"#!AMR\n", 60),  # unknown
])
def test_other_formats_are_bounded_from_their_size(head: bytes, floor: int) -> None:
    data = head + bytes(100_000)
    assert seconds_of(data) == pytest.approx(len(data) * 8 / floor)


def test_no_hold_is_for_more_than_a_day() -> None:
    assert audio_seconds(b"", 10**12) == 86_400
    assert seconds_of(_wav(None, bytes(100_000), byte_rate=1)) == 86_400


# -- pictures -------------------------------------------------------------------------


def _jpeg(width: int, height: int, marker: int = 0xC0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + bytes(9)
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + bytes(65)
    sof = bytes((0xFF, marker)) + struct.pack(">HBHHB", 11, 8, height, width, 1) + bytes(3)
    return b"\xff\xd8" + app0 + dqt + sof + b"\xff\xda" + bytes(20)


def _webp(chunk: bytes, data: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_picture_sizes_from_their_headers() -> None:
    assert picture_size(media.png(1536, 1024, (1, 2, 3))) == (1536, 1024)
    assert picture_size(_jpeg(4032, 3024)) == (4032, 3024)
    assert picture_size(_jpeg(800, 600, marker=0xC2)) == (800, 600)  # progressive
    vp8 = bytes(3) + b"\x9d\x01\x2a" + struct.pack("<HH", 2000, 1000) + bytes(10)
    assert picture_size(_webp(b"VP8 ", vp8)) == (2000, 1000)
    bits = (2999 & 0x3FFF) | ((1499 & 0x3FFF) << 14)
    assert picture_size(_webp(b"VP8L", b"\x2f" + struct.pack("<I", bits))) == (3000, 1500)
    vp8x = bytes(4) + (4095).to_bytes(3, "little") + (2047).to_bytes(3, "little")
    assert picture_size(_webp(b"VP8X", vp8x)) == (4096, 2048)
    assert picture_size(b"GIF89a" + struct.pack("<HH", 640, 480) + bytes(10)) == (640, 480)


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n", media.png(10, 10, (0, 0, 0))[:20], _jpeg(10, 10)[:30],
    b"\xff\xd8\xff\xda" + bytes(10),  # a scan before any frame
    b"\xff\xd8\xff\xe0\x00\x01", b"RIFF\0\0\0\0WEBPVP8 ", b"BM" + bytes(100),
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(8),  # 0x0
])
def test_a_picture_whose_header_says_no_size_is_none(data: bytes) -> None:
    assert picture_size(data) is None


# -- any bytes ------------------------------------------------------------------------

_MAGICS = st.sampled_from([b"", b"RIFF\0\0\0\0WAVEfmt ", b"OggS" + bytes(24) + b"\x01vorbis",
                           b"\x1a\x45\xdf\xa3fLaC\0\0\0\x22", b"RF64\0\0\0\0WAVE", b"fLaC",
                           b"fLaC\x00\x00\x00\x22", b"OggS", b"\x1a\x45\xdf\xa3",
                           b"\0\0\0\x14ftyp", b"\0\0\0\x14ftypmvhd",
                           b"\x1a\x45\xdf\xa3\x44\x89\x88", b"\x1a\x45\xdf\xa3\x2a\xd7\xb1\x88", b"ID3\x03\0\0\0\0\0\x10",
                           b"\xff\xfb\x90\xc0", b"\xff\xf3\x44\xc4", b"\x89PNG\r\n\x1a\n",
                           b"\xff\xd8", b"\xff\xd8\xff\xc0", b"RIFF\0\0\0\0WEBPVP8X",
                           b"RIFF\0\0\0\0WEBPVP8L", b"GIF89a"])


@settings(max_examples=400)
@given(_MAGICS, st.binary(max_size=2048), st.integers(min_value=-5, max_value=2**45))
def test_no_bytes_make_the_readers_raise(magic: bytes, rest: bytes, size: int) -> None:
    head = magic + rest
    seconds = audio_seconds(head, size)
    assert 0 <= seconds <= 86_400
    assert id3_length(head) >= 0
    found = picture_size(head)
    assert found is None or (found[0] > 0 and found[1] > 0)


@given(st.lists(st.sampled_from([0xFF, 0xFB, 0xF3, 0xE2, 0x90, 0x44, 0xC0, 0x00, 0x0C]),
                max_size=600), st.integers(min_value=0, max_value=2**32))
def test_an_mp3_search_in_sync_bytes_never_raises(data: list[int], size: int) -> None:
    # bytes made of frame headers' pieces: many candidate frames, some lengths in range
    head = bytes(data) * 4
    assert 0 <= audio_seconds(head, size) <= 86_400
