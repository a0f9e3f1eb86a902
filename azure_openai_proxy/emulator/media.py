"""Real, small media files: PNG images and audio in the containers TTS answers with. Pure.

What each format holds (documented in docs/emulator.md):
- wav: RIFF/WAVE, 24 kHz 16-bit mono PCM, a quiet 440 Hz tone.
- pcm: the same samples raw (little-endian signed 16-bit, no header), as OpenAI sends pcm.
- flac: a FLAC stream of VERBATIM subframes of the same tone, CRCs included.
- mp3: MPEG-2 Layer III frames, 24 kHz mono 32 kbit/s, that decode to silence.
- aac: ADTS AAC-LC frames, 24 kHz mono, each an empty (silent) channel element.
- opus: Ogg Opus with 20 ms zero-length (DTX, silent) packets.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

SAMPLE_RATE = 24_000
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long the spoken `text` lasts: about 0.35 s a word, at least half a second."""
    words = max(1, len(text.split()))
    return max(0.5, words * 0.35 / max(0.25, min(4.0, speed)))


def tone_samples(seconds: float, frequency: float = 440.0) -> list[int]:
    count = int(seconds * SAMPLE_RATE)
    step = 2 * math.pi * frequency / SAMPLE_RATE
    return [int(3000 * math.sin(step * i)) for i in range(count)]


def pcm16(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def wav(samples: list[int], rate: int = SAMPLE_RATE) -> bytes:
    data = pcm16(samples)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )


def wav_duration(data: bytes) -> float | None:
    """Seconds of audio in a PCM WAV file, or None if `data` is not one."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, 0
    while position + 8 <= len(data):
        chunk = data[position : position + 4]
        size = int(struct.unpack_from("<I", data, position + 4)[0])
        if chunk == b"fmt " and size >= 16:
            byte_rate = int(struct.unpack_from("<I", data, position + 16)[0])
        if chunk == b"data" and byte_rate:
            return min(size, len(data) - position - 8) / byte_rate
        position += 8 + size + (size & 1)
    return None


def mp3(seconds: float) -> bytes:
    # MPEG-2 Layer III, 32 kbit/s, 24 kHz, mono, no CRC: 576 samples in 96-byte frames.
    # All-zero side information and main data decode as silence.
    header = bytes((0xFF, 0xF3, 0x44, 0xC4))
    frames = max(1, math.ceil(seconds * SAMPLE_RATE / 576))
    return (header + bytes(92)) * frames


def aac(seconds: float) -> bytes:
    # ADTS header (AAC-LC, 24 kHz = index 6, mono, 11-byte frames) + one silent SCE + END.
    frame_length = 7 + 4
    bits = (
        (0xFFF << 44) | (0 << 43) | (0 << 41) | (1 << 40) | (1 << 38) | (6 << 34)
        | (0 << 33) | (1 << 30) | (frame_length << 13) | (0x7FF << 2)
    )
    frame = bits.to_bytes(7, "big") + bytes((0x00, 0x00, 0x00, 0x07))
    return frame * max(1, math.ceil(seconds * SAMPLE_RATE / 1024))


def flac(samples: list[int], block: int = 4096) -> bytes:
    info = struct.pack(">HH", block, block) + bytes(6)
    packed = (SAMPLE_RATE << 44) | (0 << 41) | (15 << 36) | len(samples)
    streaminfo = info + packed.to_bytes(8, "big") + bytes(16)
    out = [b"fLaC", bytes((0x80, 0, 0, len(streaminfo))), streaminfo]
    for number, start in enumerate(range(0, len(samples), block)):
        chunk = samples[start : start + block]
        header = bytes((0xFF, 0xF8, 0x76, 0x08)) + chr(number).encode("utf-8")
        header += struct.pack(">H", len(chunk) - 1)
        header += bytes((_crc8(header),))
        frame = header + b"\x02" + struct.pack(f">{len(chunk)}h", *chunk)
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


def opus(seconds: float) -> bytes:
    serial = 0x454D5531
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, SAMPLE_RATE, 0, 0)
    vendor = b"azure-openai-proxy emulator"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [_ogg_page(serial, 0, 0x02, 0, [head]), _ogg_page(serial, 1, 0, 0, [tags])]
    packets = max(1, math.ceil(seconds / 0.02))
    sequence, granule = 2, 312
    while packets > 0:
        batch = min(packets, 255)
        packets -= batch
        granule += batch * 960
        flags = 0x04 if packets == 0 else 0
        pages.append(_ogg_page(serial, sequence, flags, granule, [b"\x08"] * batch))
        sequence += 1
    return b"".join(pages)


def speech(fmt: str, text: str, speed: float = 1.0) -> bytes:
    seconds = speech_seconds(text, speed)
    makers: dict[str, Callable[[], bytes]] = {
        "wav": lambda: wav(tone_samples(seconds)),
        "pcm": lambda: pcm16(tone_samples(seconds)),
        "flac": lambda: flac(tone_samples(seconds)),
        "mp3": lambda: mp3(seconds),
        "aac": lambda: aac(seconds),
        "opus": lambda: opus(seconds),
    }
    return makers[fmt]()


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour RGB PNG of the given size."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height, 6)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None when `data` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return (width, height) if width and height else None


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _ogg_page(serial: int, sequence: int, flags: int, granule: int, packets: list[bytes]) -> bytes:
    lacing = b""
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
    body = b"".join(packets)
    header = b"OggS" + struct.pack("<BBqIII", 0, flags, granule, serial, sequence, 0)
    header += bytes((len(lacing),)) + lacing
    crc = _ogg_crc(header + body)
    return header[:22] + struct.pack("<I", crc) + header[26:] + body
