"""How long an uploaded audio file can play and how large an uploaded picture is, from
the first bytes of the file: what a budget holds for a transcription or an image edit
before it runs (gateway/budgethold.py). Pure: bytes in, numbers out; never raises on any
bytes.

Audio (`audio_seconds`, `id3_length`): an upper bound from the size, never a header's
claim of length (governance/mediasize_audio.py); `audio_length`, the length a header
states, for the record of a request never answered (within the bound).

Pictures (`picture_size`): the width and height in a PNG's IHDR, a JPEG's first SOFn
marker, a WebP's VP8/VP8L/VP8X header, a GIF's screen descriptor.
"""

from __future__ import annotations

from azure_openai_proxy.governance.mediasize_audio import audio_length, audio_seconds, id3_length

__all__ = ["HEAD_BYTES", "audio_length", "audio_seconds", "id3_length", "picture_size"]

# The bytes of a file read to find its header: a WAV's chunks before `data`, an MP3's
# first frame, FLAC's STREAMINFO, Vorbis's identification header, a PNG's IHDR and most
# JPEGs' SOF all fit (a JPEG's EXIF thumbnail may push SOF past it: then its size is
# unknown).
HEAD_BYTES = 16 * 1024


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
