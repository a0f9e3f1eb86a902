"""A transcription's hold is an upper bound on what a decoder plays (issue 13, budgets;
review rev-c of session 18): the hold read a header's claim of length, and a file could
say 1 s (an MP3's Xing count, an M4A's mvhd, a WebM's Duration, FLAC's total), a WAV
could state a byte rate of 4 GB/s or hide its audio in a second `data` chunk, and each was
held at a tenth to a millionth of what ffmpeg (as whisper runs it) plays: ten concurrent
ten-minute transcriptions passed a budget for one. Each file here is built from plain
bytes; the lengths ffmpeg 7 decodes for the same constructions were checked once, by
hand (the review's /tmp/rev-c/check_build.py and adversarial*.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.emulator import media
from azure_openai_proxy.errors import BudgetExhausted
from azure_openai_proxy.gateway.budgethold import reserve_budget
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.mediasize import HEAD_BYTES, audio_seconds
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from tests.unit.test_spool import BOUNDARY, form


def _body(*audio: bytes) -> RequestBody:
    """The form spooled from 64 KiB pieces, as a server hands a body over (test_spool's
    `spool` iterates aiohttp's reader by lines: these files are mostly zeros, one long
    line rescanned for each piece, 9 s for the 19 MB WAV here)."""
    data = form(("model", b"whisper", None), ("response_format", b"verbose_json", None),
                *[("file", each, "a.wav") for each in audio])

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65_536):
            yield data[start:start + 65_536]

    async def make() -> RequestBody:
        return RequestBody(spool=await SpooledBody.read(pieces(), 10**9), boundary=BOUNDARY)
    return asyncio.run(make())


def held_seconds(*audio: bytes) -> float:
    """What the gateway holds for a transcription of these file parts."""
    body = _body(*audio)
    fields = body.held_fields("audio/transcriptions")
    assert isinstance(fields, HeldForm)
    seconds = fields.audio_seconds()
    body.close()
    assert seconds is not None
    return seconds


# -- WAV ------------------------------------------------------------------------------


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")


def _fmt(tag: int, channels: int, rate: int, byte_rate: int, block: int, bits: int) -> bytes:
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block, bits))


def wav_two_data(first: float, second: float) -> bytes:
    """16 kHz mono s16: a `data` chunk of `first` seconds, then one of `second` (ffmpeg
    plays both, or the last)."""
    return _riff(_fmt(1, 1, 16000, 32000, 2, 16), _chunk(b"data", bytes(round(32000 * first))),
                 _chunk(b"data", bytes(round(32000 * second))))


def wav_mp3_rate_lie(seconds: float) -> bytes:
    """MP3 in WAV (0x55: the emulator's MPEG-2 Layer III at 32 kbit/s), its stated
    average byte rate 0xFFFFFFFF: decoders read the frames, not the rate."""
    return _riff(_fmt(0x55, 1, 24000, 0xFFFFFFFF, 1, 0), _chunk(b"data", media.mp3(seconds)))


def wav_block_lie(seconds: float) -> bytes:
    """8 kHz mono u8 PCM whose block align says 0xFFFF and byte rate 0xFFFFFFFF."""
    return _riff(_fmt(1, 1, 8000, 0xFFFFFFFF, 0xFFFF, 8),
                 _chunk(b"data", b"\x80" * round(8000 * seconds)))


def wav_second_fmt(seconds: float) -> bytes:
    """8 kHz mono u8 PCM, then a second `fmt ` saying 4 GB/s (ffmpeg keeps the first)."""
    return _riff(_fmt(1, 1, 8000, 8000, 1, 8), _fmt(1, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 8),
                 _chunk(b"data", b"\x80" * round(8000 * seconds)))


@pytest.mark.parametrize(("audio", "plays"), [
    (wav_two_data(1, 600), 601),  # main: 1 s
    (wav_mp3_rate_lie(600), 600),  # main: 0.0006 s
    (wav_block_lie(1500), 1500),  # main: 0.02 s
    (wav_second_fmt(1500), 1500),  # main: 0.003 s
], ids=["two-data", "mp3-rate", "block-align", "second-fmt"])
def test_a_wav_is_held_for_what_a_decoder_plays(audio: bytes, plays: float) -> None:
    assert held_seconds(audio) >= plays


def test_an_honest_pcm_wav_is_still_held_exactly() -> None:
    wav = _riff(_fmt(1, 2, 48000, 192000, 4, 16), _chunk(b"data", bytes(192000 * 3)))
    assert held_seconds(wav) == 3.0


# A WAV's `fmt ` values, whatever they are: the hold is at least what its bytes play at
# the rate a decoder computes from its sample rate, channels and sample size.
@settings(max_examples=300)
@given(st.sampled_from([1, 3, 0x11, 0x55, 0xFFFE, 0]), st.integers(0, 0xFFFF),
       st.sampled_from([0, 1, 8000, 44100, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFF), st.sampled_from([0, 4, 8, 16, 24, 32, 0xFFFF]))
def test_no_fmt_values_hold_a_pcm_wav_short(tag: int, channels: int, rate: int, stated: int,
                                           block: int, bits: int) -> None:
    if not rate or not channels or not bits:
        return  # no decoder plays these: what is held is the size floor
    payload = 64_000
    wav = _riff(_fmt(tag, channels, rate, stated, block, bits), b"data" + struct.pack(
        "<I", 16) + bytes(HEAD_BYTES))
    held = audio_seconds(wav[:HEAD_BYTES], len(wav) + payload)
    plays = (payload + HEAD_BYTES) / max(rate * max(channels, 1) * max(-(-bits // 8), 1), 1)
    assert held >= min(plays, 86_400) * 0.999


# -- MP3 ------------------------------------------------------------------------------


def _mpeg1_frame(index: int) -> bytes:
    """An MPEG-1 Layer III frame, 44.1 kHz mono, no CRC, bitrate index `index`."""
    kbps = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[index - 1]
    return bytes((0xFF, 0xFB, index << 4, 0xC4)) + bytes(144 * kbps * 1000 // 44100 - 4)


def _mpeg2_frame(index: int) -> bytes:
    """An MPEG-2 Layer III frame, 16 kHz mono, bitrate index `index` (1: 8, 14: 160
    kbit/s): 576 samples."""
    kbps = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[index - 1]
    return bytes((0xFF, 0xF3, (index << 4) | 0x08, 0xC4)) + bytes(72 * kbps * 1000 // 16000 - 4)


def test_an_mp3_whose_info_header_counts_one_frame_is_held_for_its_frames() -> None:
    info = bytearray(_mpeg1_frame(1))
    info[4 + 17:4 + 17 + 12] = b"Info" + struct.pack(">II", 1, 1)  # frames given: 1
    frames = round(3000 * 44100 / 1152)
    assert held_seconds(bytes(info) + _mpeg1_frame(1) * frames) >= 3000  # main: 300 s


def test_a_vbr_mp3_without_a_header_is_held_at_its_lowest_bitrate() -> None:
    # two 320 kbit/s frames, then 32 kbit/s ones: an ordinary VBR file starts high too
    frames = round(3000 * 44100 / 1152)
    mp3 = _mpeg1_frame(14) * 2 + _mpeg1_frame(1) * frames
    assert held_seconds(mp3) >= 3000  # main: 300 s


def test_an_mpeg2_mp3_is_held_at_8_kbits() -> None:
    # 160 kbit/s frames, then 8 kbit/s ones (ffmpeg plays 20,000 s of the review's)
    frames = round(20_000 * 16000 / 576)
    head = _mpeg2_frame(14) * 10 + _mpeg2_frame(1) * (HEAD_BYTES // 36)
    size = len(_mpeg2_frame(14)) * 10 + len(_mpeg2_frame(1)) * frames
    assert audio_seconds(head, size) >= 20_000  # main: 1,000 s


def _mpeg25_frame() -> bytes:
    """An MPEG-2.5 Layer III frame at 8 kbit/s, 8 kHz mono: 72 bytes for 576 samples."""
    return bytes((0xFF, 0xE3, 0x18, 0xC4)) + bytes(68)


def test_an_mp3_whose_first_frames_are_mpeg1_is_held_for_later_mpeg25_ones() -> None:
    # ffmpeg 7 decodes 20 MPEG-1 frames then 20,000 MPEG-2.5 ones as 1,440.6 s: a
    # floor by the first frame's version (32 kbit/s) held it at 392 s
    mp3 = _mpeg1_frame(1) * 20 + _mpeg25_frame() * 20_000
    assert held_seconds(mp3) >= 1440  # main: 361 s


def test_an_id3_tag_claiming_more_than_the_file_hides_nothing() -> None:
    mp3 = _mpeg1_frame(9) * 2_000  # 52 s at 128 kbit/s
    size = 200_000_000
    tag = b"ID3\x03\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F,
                                      size >> 7 & 0x7F, size & 0x7F))
    assert held_seconds(tag + mp3) >= 52  # main: 0 s


# -- the rest: a header's length is not read ------------------------------------------


def _m4a_mvhd(timescale: int, duration: int) -> bytes:
    ftyp = struct.pack(">I", 20) + b"ftypM4A " + struct.pack(">I", 0) + b"M4A "
    body = bytes(12) + struct.pack(">II", timescale, duration) + bytes(80)
    mvhd = struct.pack(">I", 8 + len(body)) + b"mvhd" + body
    return ftyp + struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd


_EBML = b"\x1a\x45\xdf\xa3\x84" + bytes(4) + b"\x18\x53\x80\x67\x01" + bytes(7)


@pytest.mark.parametrize(("head", "size", "plays"), [
    # an hour of 16 kbit/s AAC whose mvhd says 1 s (main: 104 s)
    (_m4a_mvhd(44_100, 44_100) + bytes(4000), 7_488_764, 3600),
    # an hour of 8 kbit/s Opus in WebM, its Duration 1 ms (main: 54 s)
    (_EBML + b"\x44\x89\x84" + struct.pack(">f", 1.0) + bytes(4000), 3_448_749, 3600),
    # a live WebM with a Duration planted in a Void element (main: 54 s)
    (_EBML + b"\xec\x87\x44\x89\x84" + struct.pack(">f", 1.0) + bytes(4000), 3_465_237, 3600),
    # an hour of Ogg Opus silence with DTX: 1.1 kbit/s (main: 667 s)
    (b"OggS" + bytes(24) + b"OpusHead" + bytes(4000), 500_270, 3600),
    # Ogg Opus of one-byte packets (a TOC of code 1: two empty 60 ms frames), 255 a
    # page: ffmpeg 7 plays 120 such pages (64,535 bytes) as 3,672 s, 141 bit/s (main:
    # 86 s; a 200 bit/s floor: 2,581 s)
    (b"OggS" + bytes(24) + b"OpusHead" + bytes(4000), 64_535, 3672),
], ids=["m4a-mvhd-1s", "webm-duration-1ms", "webm-void-duration", "ogg-opus-dtx",
        "ogg-opus-empty-frames"])
def test_a_header_that_says_less_is_not_read(head: bytes, size: int, plays: float) -> None:
    assert audio_seconds(head, size) >= plays


def test_flac_whose_total_says_one_sample_is_held_a_day() -> None:
    # an hour of 16 kHz silence as ffmpeg writes it (4,096-sample frames): 737,360 bytes
    packed = (16_000 << 44) | (15 << 36) | 1
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    flac = b"fLaC" + bytes((0x80, 0, 0, 34)) + info + bytes(4000)
    assert audio_seconds(flac, 737_360) >= 3600  # main: 21 s


def test_flac_whose_frames_state_a_lower_sample_rate_is_held_for_them() -> None:
    # STREAMINFO says 192 kHz in blocks of 4,096; each 14-byte frame says 8 kHz: ffmpeg 7
    # plays 1,000 of them as 512 s. Frames may say 1 Hz: FLAC is held a day.
    packed = (192_000 << 44) | (15 << 36)
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    flac = b"fLaC" + bytes((0x80, 0, 0, 34)) + info + bytes(14_000)
    assert audio_seconds(flac, len(flac)) >= 512  # main: 56 s (its size at 2 kbit/s)


# -- the form -------------------------------------------------------------------------


def test_a_form_giving_several_files_holds_its_last_too() -> None:
    # a reader binding a repeated name may take the last: short, short, long
    honest_short = _riff(_fmt(1, 1, 8000, 8000, 1, 8), _chunk(b"data", bytes(8000)))
    long = _riff(_fmt(1, 1, 8000, 8000, 1, 8), _chunk(b"data", bytes(8000 * 600)))
    assert held_seconds(honest_short, honest_short, long) >= 600  # main: 1 s


def test_a_budget_for_one_ten_minute_transcription_refuses_the_second() -> None:
    """Ten concurrent ten-minute whisper transcriptions ($0.06 each) on a $0.05 budget:
    each was held at $0 and all were sent."""
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    caller = Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc",
                                     limits=Limits(budget_usd=0.05, budget_period="daily")))
    audio = wav_mp3_rate_lie(600)
    held = 0
    for _ in range(10):
        body = _body(audio)
        try:
            reserve_budget(guard, caller, body.held_fields("audio/transcriptions"),
                           ("whisper",) * 3, "audio/transcriptions", 1024)
            held += 1
        except BudgetExhausted:
            pass
        body.close()
    assert held == 1
