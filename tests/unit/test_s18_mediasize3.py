"""Session 18's review of the transcription holds' second version: WAV files ffmpeg plays
longer than their hold (ffmpeg n9.0.2's durations, by the reviewer: `ffmpeg -i F -ac 1
-ar 16000 -f s16le - | wc -c` / 32000, whisper's decode): a RIFF/WAVE that ffmpeg's ACT
demuxer claims (G.729), an extensible `fmt ` whose valid bits pick the codec, and a
size floor not scaled for a low sample rate where the header is not trusted. (Its Opus
in MP4 and Matroska-laced WebM, built with ffmpeg, lowered those floors to 60 bit/s:
tests/unit/test_s18_mediasize.py.)"""

from __future__ import annotations

import struct

import pytest

from azure_openai_proxy.governance.mediasize import HEAD_BYTES, audio_seconds


def held(data: bytes) -> float:
    return audio_seconds(data[:HEAD_BYTES], len(data))


def riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(c + struct.pack("<I", len(d)) + d + (b"\0" if len(d) & 1 else b"")
                    for c, d in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def act(channels: int, bits: int, n: int = 100_000) -> bytes:
    """A RIFF/WAVE with a PCM `fmt ` that ffmpeg's ACT demuxer claims (score 100 over
    wav's 99): G.729, 10 bytes per 10 ms from byte 512."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, 8000, 8000 * block, block, bits)
    h = bytearray(b"RIFF" + struct.pack("<I", 504 + n) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
                  + fmt + b"data" + struct.pack("<I", 468 + n))
    h += bytes(512 - len(h))
    h[256] = 0x84
    return bytes(h) + bytes(n)


@pytest.mark.parametrize(("channels", "bits"), [(2, 16), (64, 64)])
def test_act_g729_in_a_pcm_wav(channels: int, bits: int) -> None:
    # ffmpeg: 99.61 s for both; held 3.14 s and 0.0245 s
    assert held(act(channels, bits)) >= 99.0


def test_extensible_valid_bits_pick_the_codec() -> None:
    # ffmpeg takes wValidBitsPerSample (8: pcm_u8) over wBitsPerSample (64): 8 s, held 1 s
    rate, ch, bits, valid, n = 8000, 1, 64, 8, 8000 * 8
    block = ch * bits // 8
    fmt = (struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * block, block, bits, 22, valid, 0)
           + struct.pack("<I", 1) + bytes.fromhex("00001000800000aa00389b71"))
    assert held(riff([(b"fmt ", fmt), (b"data", b"\x80" * n)])) >= 8.0


PCM4 = struct.pack("<HHIIHH", 1, 1, 4, 4, 1, 8)  # 4 Hz u8 mono: 4 bytes a second
N = 4000  # 1,000 s in ffmpeg for each below


@pytest.mark.parametrize("chunks", [
    [(b"fmt ", PCM4[:14]), (b"data", b"\x80" * N)],             # WAVEFORMAT (14 bytes): 8 bits
    [(b"data", b"\x80" * N), (b"fmt ", PCM4)],                  # fmt after data (seekable)
    [(b"fmt ", PCM4), (b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)), (b"data", b"\x80" * N)],
    [(b"junk", b"")] * 65 + [(b"fmt ", PCM4), (b"data", b"\x80" * N)],
], ids=["fmt14", "data_first", "two_fmt", "65_chunks"])
def test_untrusted_wav_floor_is_not_scaled_for_a_low_rate(chunks: list[tuple[bytes, bytes]]) -> None:
    assert held(riff(chunks)) >= 1000.0  # held 267-304 s
