"""How long an uploaded audio file plays and how large an uploaded picture is, from the
first bytes of the file: what a budget holds for a transcription or an image edit before
it runs (gateway/budgethold.py). Pure: bytes in, numbers out; never raises on any bytes.

Audio (`audio_seconds`), read from the header where that is cheap and exact:

- WAV (RIFF/RF64): the `data` chunk's size over the `fmt ` chunk's byte rate; a size of
  0 or 0xFFFFFFFF (a writer that streamed it), or past the file's end, is what the file
  holds after the chunk's header.
- MP3 (MPEG audio, ID3v2 tag skipped by the caller: `id3_length`): a Xing/Info or VBRI
  header's frame count, else the bytes over the first frame's bitrate (a frame is taken
  as the first only when the next one follows where its length says, or past the bytes
  given).
- FLAC: STREAMINFO's total samples over its sample rate.
- MP4/M4A: the movie header's (`mvhd`) duration, when it is among the first bytes.
- WebM: its Segment Info's Duration, when it has one among the first bytes.

Anything else (Ogg, a WebM recorded live, an MP4 whose `moov` comes last, an unknown format, a header
that does not parse) is bounded from its size at a bitrate no real file of its kind goes
under (`_FLOOR_BPS`): more than it lasts, never less.

Pictures (`picture_size`): the width and height in a PNG's IHDR, a JPEG's first SOFn
marker, a WebP's VP8/VP8L/VP8X header, a GIF's screen descriptor.
"""

from __future__ import annotations

import math
import re
import struct

__all__ = ["HEAD_BYTES", "audio_seconds", "id3_length", "picture_size"]

# The bytes of a file read to find its header: a WAV's chunks before `data`, an MP3's
# first frames with their Xing header, FLAC's STREAMINFO, a PNG's IHDR and most JPEGs'
# SOF all fit (a JPEG's EXIF thumbnail may push SOF past it: then its size is unknown).
HEAD_BYTES = 16 * 1024

# Bits per second no real file of a kind goes under, for the formats whose length is not
# read from a header: bytes / floor is more than the file lasts.
_FLOOR_BPS = {
    # Opus's lowest bitrate is 6 kbit/s (RFC 6716 §2.1.1); Vorbis runs higher. WebM
    # holds only those two.
    "webm": 6_000,
    "ogg": 6_000,
    # Speex in Ogg goes down to 2.15 kbit/s (its narrowband mode 1).
    "speex": 2_000,
    # AMR-NB's lowest mode is 4.75 kbit/s, in 3GP files that share MP4's `ftyp`; AAC
    # (M4A) runs higher.
    "mp4": 4_000,
    # FLAC whose STREAMINFO gives no total: lossless frames of silence are a few bytes
    # each, so nothing bounds it from below but what the others do; and anything not
    # recognised (an MP3 whose frames are not found among its first bytes too: MPEG-2.5
    # goes down to 8 kbit/s, Speex and AMR lower).
    "flac": 2_000,
    "unknown": 2_000,
}
# No hold is for more than a day of audio: the size bounds of the cheapest kinds (25 MB,
# Azure's largest upload, at 2 kbit/s) stay under it.
_MOST_SECONDS = 86_400.0

# FLAC's frames against raw PCM: their headers and CRCs add under 10% (a verbatim frame).
_FLAC_OVERHEAD = 1.1
# The most bits per second of an M4A's audio: AAC's highest for stereo at 48 kHz is
# 576 kbit/s (6,144 bits per channel per 1,024 samples); a movie with pictures, more (its
# audio held longer than it lasts).
_MOST_MP4_BPS = 576_000
# WebM (EBML): Segment Info's Duration element (ID 0x4489, a 4- or 8-byte float) and
# TimecodeScale (ID 0x2AD7B1, an unsigned integer of 1 to 8 bytes: its size's low bits).
_WEBM_DURATION = re.compile(rb"\x44\x89([\x84\x88])")
_WEBM_SCALE = re.compile(rb"\x2a\xd7\xb1([\x81-\x88])")
# The most bits per second of a WebM's audio: Opus's highest is 510 kbit/s; one with
# pictures is held longer than it lasts.
_MOST_WEBM_BPS = 512_000
# An MPEG audio frame's first two bytes: 11 bits of sync.
_MP3_SYNC = re.compile(rb"\xff[\xe0-\xff]")
# Sync patterns tried for an MP3's first frame: a real one is found at the first, or
# after a few stray bytes; a run of 0xFF (up to `HEAD_BYTES` of candidates, 20 ms) is not
# searched to its end.
_MOST_SYNC_TRIES = 256
# MPEG audio: kbit/s by (version is MPEG-1, layer) and index 1-14.
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Hz by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and index 0-2.
_SAMPLE_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000),
                 0: (11_025, 12_000, 8_000)}


def audio_seconds(head: bytes, size: int) -> float:
    """The seconds an audio file plays, at least (see the module's docstring): `head`
    is its first bytes (`HEAD_BYTES` of them, or all of a shorter file; after an ID3v2
    tag, `id3_length`), `size` its length in bytes from there."""
    size = max(size, len(head))
    kind = _kind(head)
    seconds: float | None = None
    if kind == "wav":
        seconds = _wav_seconds(head, size)
    elif kind == "flac":
        seconds = _flac_seconds(head, size)
    elif kind == "mp4":
        seconds = _mp4_seconds(head, size)
    elif kind == "webm":
        seconds = _webm_seconds(head, size)
    elif kind == "unknown":  # MP3 has no magic: its frames are looked for
        seconds = _mp3_seconds(head, size)
    if seconds is None:
        floor = _FLOOR_BPS.get(kind, _FLOOR_BPS["unknown"])
        seconds = size * 8 / floor
    return min(max(seconds, 0.0), _MOST_SECONDS)


def id3_length(head: bytes) -> int:
    """The bytes of an ID3v2 tag at the start of `head` (an MP3's, before its first
    frame; a cover picture can make it hundreds of KB), 0 when there is none."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
        return 0
    sizes = head[6:10]
    if any(byte & 0x80 for byte in sizes):
        return 0  # not a synchsafe size: not a tag
    length = (sizes[0] << 21) | (sizes[1] << 14) | (sizes[2] << 7) | sizes[3]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + length + footer


def picture_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, WebP or GIF from its first bytes, or None when
    they say neither (another format, a truncated or malformed header)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return _positive(int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return _positive(int.from_bytes(head[6:8], "little"),
                         int.from_bytes(head[8:10], "little"))
    return None


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _kind(head: bytes) -> str:
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "speex" if head[28:36] == b"Speex   " else "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"
    return "unknown"  # MP3 has no magic of its own: its frames are looked for


def _u32le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def _wav_seconds(head: bytes, size: int) -> float | None:
    """A WAV's `data` bytes over its byte rate; None when its chunks do not say."""
    position, rate = 12, 0
    while position + 8 <= len(head):
        chunk, length = head[position:position + 4], _u32le(head, position + 4)
        if chunk == b"fmt " and position + 24 <= len(head):
            rate = _wav_rate(head[position + 8:position + 24])
        elif chunk == b"data":
            if rate <= 0:
                return None
            held = size - position - 8  # what the file holds after the chunk's header
            if length in (0, 0xFFFFFFFF) or length > held or head[:4] == b"RF64":
                length = held  # streamed, truncated, or RF64's (its size is in ds64)
            return max(length, 0) / rate
        position += 8 + length + (length & 1)
    # no `data` among the first bytes (a long chunk before it): all of it at the rate
    return size / rate if rate > 0 else None


def _wav_rate(fmt: bytes) -> int:
    """Bytes per second of a WAV's `fmt ` chunk body (its first 16 bytes): for PCM
    (1, float 3, extensible 0xFFFE) the sample rate times the block size, as decoders
    read it, or the byte rate it states if lower (held longer); the stated byte rate for
    a compressed format (ADPCM, GSM: the average)."""
    tag = int.from_bytes(fmt[0:2], "little")
    sample_rate, stated = _u32le(fmt, 4), _u32le(fmt, 8)
    block = int.from_bytes(fmt[12:14], "little")
    if tag in (1, 3, 0xFFFE) and sample_rate and block:
        computed = sample_rate * block
        return min(computed, stated) if stated else computed
    return stated


def _flac_seconds(head: bytes, size: int) -> float | None:
    """FLAC's STREAMINFO (the first metadata block, 34 bytes): total samples over the
    sample rate; None when it gives no total (a stream whose length was not known)."""
    if len(head) < 8 + 18 or head[4] & 0x7F != 0:
        return None
    info = head[8:8 + 18]  # through the total samples
    rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    channels = ((info[12] >> 1) & 7) + 1
    bits = (((info[12] & 1) << 4) | (info[13] >> 4)) + 1
    total = ((info[13] & 0x0F) << 32) | int.from_bytes(info[14:18], "big")
    if rate == 0 or total == 0:
        return None
    # Never less than its bytes as raw PCM (FLAC's frames are no larger, but for their
    # few header bytes), should the total lie.
    return max(total / rate, size / (rate * channels * bits / 8 * _FLAC_OVERHEAD))


def _mp4_seconds(head: bytes, size: int) -> float | None:
    """An MP4's movie header (`mvhd`): its duration over its timescale, when the
    `moov` box comes before the media (a file written for streaming) and within
    `head` (but no less than its bytes at `_MOST_MP4_BPS`, should it lie); None
    otherwise."""
    at = head.find(b"mvhd")
    if at < 4 or at + 24 > len(head):
        return None
    version = head[at + 4]
    if version == 1:
        if at + 36 > len(head):
            return None
        scale = int.from_bytes(head[at + 24:at + 28], "big")
        duration = int.from_bytes(head[at + 28:at + 36], "big")
    else:
        scale = int.from_bytes(head[at + 16:at + 20], "big")
        duration = int.from_bytes(head[at + 20:at + 24], "big")
    if scale == 0 or duration in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        return None
    return max(duration / scale, size * 8 / _MOST_MP4_BPS)


def _webm_seconds(head: bytes, size: int) -> float | None:
    """A WebM's Segment Info `Duration` (a float in `TimecodeScale` units, 1 ms when not
    given), when a file written whole has one among its first bytes (a recording made
    live, a browser's MediaRecorder's, has none: None), but no less than its bytes at
    `_MOST_WEBM_BPS`, should it lie."""
    found = _WEBM_DURATION.search(head)
    if found is None:
        return None
    width = 4 if found[1] == b"\x84" else 8
    value = head[found.end():found.end() + width]
    if len(value) < width:
        return None
    duration = float(struct.unpack(">f" if width == 4 else ">d", value)[0])
    scale = 1_000_000
    scaled = _WEBM_SCALE.search(head)
    if scaled is not None:
        digits = head[scaled.end():scaled.end() + (scaled[1][0] & 0x0F)]
        scale = int.from_bytes(digits, "big") or scale
    seconds = duration * scale / 1e9
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return max(seconds, size * 8 / _MOST_WEBM_BPS)


def _mp3_frame(head: bytes, at: int) -> tuple[int, int, int, int] | None:
    """(frame length, bits per second, samples per frame, sample rate) of an MPEG audio
    frame header at `at`, or None when there is none (or a free-format one)."""
    if at + 4 > len(head):
        return None
    b1, b2 = head[at + 1], head[at + 2]
    if head[at] != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][index - 1] * 1000
    sample_rate = _SAMPLE_RATES[version][rate_index]
    padding = (b2 >> 1) & 1
    if layer == 1:
        return (12 * bitrate // sample_rate + padding) * 4, bitrate, 384, sample_rate
    samples = 1152 if layer == 2 or mpeg1 else 576
    return samples // 8 * bitrate // sample_rate + padding, bitrate, samples, sample_rate


def _mp3_seconds(head: bytes, size: int) -> float | None:
    """An MP3's seconds from its first frame (see the module's docstring); None when no
    frame is found among the first bytes."""
    found = _MP3_SYNC.search(head)
    tries = _MOST_SYNC_TRIES
    while found is not None and tries:
        tries -= 1
        at = found.start()
        frame = _mp3_frame(head, at)
        if frame is not None and frame[0] > 4:
            # the next frame where this one's length says, or the file's end: a lone
            # sync pattern in other bytes is not taken for a frame
            following = at + frame[0]
            if following >= size or _mp3_frame(head, following) is not None:
                return _mp3_length(head, at, frame, size - at)
        found = _MP3_SYNC.search(head, at + 1)
    return None


def _mp3_length(head: bytes, at: int, frame: tuple[int, int, int, int], size: int) -> float:
    """The seconds of an MP3 whose first frame is at `at`: its Xing/Info or VBRI frame
    count when it has one (but no less than its bytes at the highest bitrate of its
    kind, should the count lie), else its bytes over the frame's bitrate."""
    _, bitrate, samples, sample_rate = frame
    b1, b3 = head[at + 1], head[at + 3]
    mpeg1, mono = (b1 >> 3) & 3 == 3, b3 >> 6 == 3
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    frames = None
    xing = at + 4 + side + (0 if b1 & 1 else 2)  # a CRC (protection bit 0) comes first
    if (head[xing:xing + 4] in (b"Xing", b"Info") and xing + 12 <= len(head)
            and int.from_bytes(head[xing + 4:xing + 8], "big") & 1):  # frames given
            frames = int.from_bytes(head[xing + 8:xing + 12], "big")
    vbri = at + 36
    if frames is None and head[vbri:vbri + 4] == b"VBRI" and vbri + 18 <= len(head):
        frames = int.from_bytes(head[vbri + 14:vbri + 18], "big")
    if frames:
        highest = max(_BITRATES[(mpeg1, 4 - ((b1 >> 1) & 3))]) * 1000
        return max(frames * samples / sample_rate, size * 8 / highest)
    return size * 8 / bitrate


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """A JPEG's size from its first start-of-frame marker (SOF0-SOF15 but DHT, JPG and
    DAC), walking the segments before it."""
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        if marker in (0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7):
            at += 2  # markers without a length
            continue
        length = int.from_bytes(head[at + 2:at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if at + 9 > len(head):
                return None
            return _positive(int.from_bytes(head[at + 7:at + 9], "big"),
                             int.from_bytes(head[at + 5:at + 7], "big"))
        if length < 2 or marker == 0xDA:  # a malformed length, or the scan: no frame
            return None
        at += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        return _positive(int.from_bytes(head[26:28], "little") & 0x3FFF,
                         int.from_bytes(head[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return (int.from_bytes(head[24:27], "little") + 1,
                int.from_bytes(head[27:30], "little") + 1)
    return None
