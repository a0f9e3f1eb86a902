"""How long an uploaded audio file can play, at most, from its first bytes and its size:
what a budget holds for a transcription before it runs (gateway/budgethold.py). Pure:
bytes in, seconds out; never raises on any bytes.

The hold only keeps concurrent requests from spending past a budget together (the record
after is priced from Azure's own duration), so it must be an upper bound that no header
can make shorter than what a decoder (ffmpeg, as whisper runs it) plays, not a guess at
the length. A header's length figure (an MP3's Xing/VBRI count, FLAC's total samples, an
MP4's `mvhd`, a WebM's Duration) is a claim any writer can set to 1: none is read for
it (`audio_length` reads them for a record's best estimate, within the bound). What
is read is what bounds the bytes' playing time:

- WAV (RIFF/RF64) of PCM (format 1, float 3, extensible 0xFFFE): every byte after the
  first `data` chunk's header (never its stated size) over the lowest byte rate its
  first `fmt ` can mean (sample rate x channels x bytes per sample, sample rate x block
  align, the stated rate). Any other format, a second `fmt `, or values of 0 or past
  any real file's: the size floor (lower for a sample rate under 8 kHz).
- MP3: its size at the lowest bitrate of any MPEG audio frame (8 kbit/s, less a frame's
  rounding: `_LEAST_MP3_BPS`): a frame's length is set by its bitrate, so no frame
  plays longer for its bytes. Not the lowest of its first frame's version: ffmpeg plays
  MPEG-2.5 frames at 8 kbit/s after an MPEG-1 first one.
- FLAC (alone or in a container), ALAC and PCM in MP4 or WebM: a day, the most any hold is
  (`_container_floor` says why).
- Every other kind (Ogg, WebM, MP4, what is not recognised): its size at the fewest bits
  per second its frames can take (`_FLOOR_BPS`, `_vorbis_floor`): compressed silence is
  a few bytes a frame, so these hold an ordinary file for many times its length.
"""

from __future__ import annotations

import re
import struct

__all__ = ["audio_length", "audio_seconds", "id3_length"]

# Bits per second no file of a kind goes under, whatever its header says: bytes / floor
# is more than it plays.
_FLOOR_BPS = {
    # Opus (Ogg, WebM): a one-byte packet (its TOC: code 1, two empty 60 ms frames)
    # plays 120 ms, the most a packet may (RFC 6716 §3.2.5), and takes a lacing byte
    # beside it: 2 bytes for 120 ms, 133 bit/s with Ogg's page headers. libopus's silence
    # with DTX runs 600 bit/s (60-120 ms frames) to 1.1 kbit/s, under the 6 kbit/s of its
    # lowest bitrate.
    "ogg": 120,
    # Matroska's fixed lacing packs 256 one-byte packets in one block: ~72 bit/s
    "webm": 60,
    # MP4/M4A/3GP: AAC's silent frame is about 5 bytes for 1,024 samples (HE-AAC: 2,048
    # at twice the rate) at 7.35 kHz or more, its size in the sample table once for all
    # when they are equal: 287 bit/s; AMR's NO_DATA frames a byte for 20 ms; Opus in MP4
    # one byte per 120 ms in a uniform sample table, 67 bit/s. The `moov` is not read
    # (it may come last).
    "mp4": 60,
    # Anything not recognised (ADTS AAC, AMR, an MP3 whose first frames are not among
    # the first bytes): the lowest of the above.
    "unknown": 60,
}
# The size floor of a WAV whose header cannot be trusted: its format may be any codec.
_WAV_FLOOR_BPS = _FLOOR_BPS["unknown"]
# No hold is for more than a day of audio.
_MOST_SECONDS = 86_400.0

# PCM WAV: values no real file holds make the header untrusted (the size floor).
_PCM_TAGS = (1, 3)  # and extensible (0xFFFE) holding either
_MOST_WAV_RATE = 768_000
_MOST_WAV_CHANNELS = 64
_MOST_WAV_BITS = 64
# The sample rate the size floor is for: a codec's bitrate at a lower one may be lower.
_LEAST_RATE = 8_000
# A WAV's chunks read (a LIST per chunk of junk): more is the size floor.
_MOST_WAV_CHUNKS = 64

# An MP4 sample entry of a lossless codec.
_LOSSLESS = re.compile(rb"alac|fLaC|lpcm|sowt|twos|ipcm|fpcm|in24|in32|fl32|fl64|raw ")
# A Matroska track's CodecID of a lossless codec (Chrome's MediaRecorder writes
# `audio/webm;codecs=pcm` as A_PCM/FLOAT/IEEE or A_PCM/INT/LIT): 1.5 Mbit/s and more.
_WEBM_LOSSLESS = re.compile(rb"A_PCM|A_FLAC|A_ALAC|A_WAVPACK|A_TTA")
# Vorbis: an audio packet is at least a byte (with its lacing byte: 2) and plays at most
# half its longer block size, both from its identification header.
_VORBIS_LEAST_PACKET = 2
# A sample rate past any real file's (a Vorbis header can say 4 GHz): a day's hold, not
# a floor that high.
_MOST_RATE = 192_000

# An MPEG audio frame's first two bytes: 11 bits of sync.
_MP3_SYNC = re.compile(rb"\xff[\xe0-\xff]")
# Sync patterns tried for an MP3's first frame: a real one is found at the first, or
# after a few stray bytes; a run of 0xFF is not searched to its end.
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
# The fewest bits per second of any MPEG audio frame, of any version, layer and sample
# rate (a file's later frames may change all three: ffmpeg decodes 20 MPEG-1 frames then
# 20,000 MPEG-2.5 ones as 1,440 s): the lowest bitrate, 8 kbit/s, less the fraction a
# frame's length is rounded down by without its padding byte (MPEG-2 Layer II at 22.05
# kHz: 52 bytes for 1,152 samples, 7.96 kbit/s).
_LEAST_MP3_BPS = 7_962
# Hz by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and index 0-2.
_SAMPLE_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000),
                 0: (11_025, 12_000, 8_000)}


def audio_seconds(head: bytes, size: int) -> float:
    """The most seconds an audio file can play (see the module's docstring): `head` is
    its first bytes (after an ID3v2 tag, `id3_length`), `size` its length in bytes (the
    tag's too: a decoder may read past a tag that lies)."""
    size = max(size, len(head))
    kind = _kind(head)
    if kind == "wav":
        bps, header = _wav_bps(head)
        size -= header
    elif kind == "flac":
        bps = 0.0  # see _container_floor
    elif kind == "unknown":  # MP3 has no magic: its frames are looked for
        bps = _mp3_floor(head, size) or _FLOOR_BPS["unknown"]
    else:
        bps = _container_floor(kind, head)
    if bps <= 0:
        return _MOST_SECONDS
    return min(max(size, 0) * 8 / bps, _MOST_SECONDS)


# A length a header states is never taken below the file's size at the fastest its
# kind's audio runs: a header may lie short (a Xing count of 1), and Azure bills what its
# decoder plays. MPEG audio: no frame's bitrate is past 448 kbit/s (MPEG-1 Layer I), so
# an MP3's floor holds whatever its header says. Opus, Vorbis and AAC (Ogg, WebM, MP4):
# 512 kbit/s, past what encoders write for speech or music (Opus stops at 510 kbit/s), not
# a codec's limit: audio encoded faster under a header that lies can be recorded shorter
# than it plays. Lossless audio (FLAC, ALAC or PCM in MP4): 192 kHz, 24 bits, stereo.
_FASTEST_BPS = {"unknown": 448_000, "ogg": 512_000, "webm": 512_000, "mp4": 512_000}
_MOST_BPS = 9_216_000


def audio_length(head: bytes, size: int, whole: int = 0) -> float | None:
    """How long an audio file plays, as its header states it (an MP3's Xing frame count,
    else its first frame's bitrate; FLAC's total samples; an MP4's `mvhd`; a WebM's
    Duration; Ogg Vorbis's nominal bitrate), within `audio_seconds`'s bound and never
    under its size at the fastest its kind's audio runs (`_FASTEST_BPS`); None where the
    first bytes state none (a WAV's bound is its length already). A best estimate, for
    the record of a request never answered, not for a hold. `size`: the audio's bytes,
    an MP3's ID3 tag not counted (a cover picture is no audio), for the length its
    frames state; `whole`: the file's, the tag's too, for the floor and the bound (a tag
    that lies long must not take the file under them: a decoder may read past it)."""
    size = max(size, len(head))
    whole = max(whole, size)
    kind = _kind(head)
    seconds = (_mp3_length(head, size) if kind == "unknown" else _flac_length(head)
               if kind == "flac" else _mp4_length(head) if kind == "mp4" else
               _webm_length(head) if kind == "webm" else _vorbis_length(head, size)
               if kind == "ogg" else None)
    if seconds is None:
        return None
    fastest = (_MOST_BPS if kind == "flac" or _container_floor(kind, head) == 0.0
               else _FASTEST_BPS[kind])
    return min(max(seconds, whole * 8 / fastest), audio_seconds(head, whole))


def _mp3_length(head: bytes, size: int) -> float | None:
    at = _mp3_first(head, size)
    if at is None:
        return None
    frame = _mp3_frame(head, at) or 0
    b1, b2 = head[at + 1], head[at + 2]
    version, layer = (b1 >> 3) & 3, 4 - ((b1 >> 1) & 3)
    rate = _SAMPLE_RATES[version][(b2 >> 2) & 3]
    xing = max(head.find(b"Xing", at, at + frame), head.find(b"Info", at, at + frame))
    if xing >= 0 and xing + 12 <= len(head) and head[xing + 7] & 1:  # its frame count
        samples = 384 if layer == 1 else 1152 if layer == 2 or version == 3 else 576
        return int.from_bytes(head[xing + 8:xing + 12], "big") * samples / rate
    bitrate = _BITRATES[(version == 3, layer)][(b2 >> 4) - 1] * 1000
    return (size - at) * 8 / bitrate


def _flac_length(head: bytes) -> float | None:
    """STREAMINFO's total samples over its sample rate (both 0 where not known)."""
    if len(head) < 26 or head[4] & 0x7F != 0:  # the first block is STREAMINFO
        return None
    packed = int.from_bytes(head[18:26], "big")
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    return total / rate if rate and total else None


def _mp4_length(head: bytes) -> float | None:
    """The movie header's duration over its timescale, where the `moov` comes first."""
    at = head.find(b"mvhd")
    if at < 0 or at + 36 > len(head):
        return None
    if head[at + 4] == 1:  # 64-bit times
        scale = int.from_bytes(head[at + 24:at + 28], "big")
        duration = int.from_bytes(head[at + 28:at + 36], "big")
    else:
        scale = int.from_bytes(head[at + 16:at + 20], "big")
        duration = int.from_bytes(head[at + 20:at + 24], "big")
    return duration / scale if scale and duration else None


# Matroska element IDs read for a WebM's Duration: the Segment, its Info (Duration and
# TimecodeScale within), and its first Cluster (past it no Info comes).
_SEGMENT, _INFO, _CLUSTER = 0x18538067, 0x1549A966, 0x1F43B675
_DURATION, _TIMECODE_SCALE = 0x4489, 0x2AD7B1
_MOST_ELEMENTS = 64  # read before the Info: more, and no Duration is taken


def _webm_length(head: bytes) -> float | None:
    """The Segment Info's Duration (a float, in TimecodeScale units: 1 ms by default),
    found by walking the elements (an ID and a size each), never by searching the bytes:
    a live recording's WebM (a browser's MediaRecorder) has no Duration, and its audio's
    bytes may read like one."""
    at, found = 0, _ebml_element(head, 0)  # the EBML header: skipped
    if found is None or found[0] != 0x1A45DFA3 or found[2] < 0:
        return None
    at = found[1] + found[2]
    segment = _ebml_element(head, at)
    if segment is None or segment[0] != _SEGMENT:
        return None
    at = segment[1]
    for _ in range(_MOST_ELEMENTS):
        element = _ebml_element(head, at)
        if element is None or element[0] == _CLUSTER or element[2] < 0:
            return None
        ident, start, length = element
        if ident == _INFO:
            return _webm_info_seconds(head[start:start + length])
        at = start + length
    return None


def _webm_info_seconds(info: bytes) -> float | None:
    duration, scale, at = None, 1_000_000, 0
    for _ in range(_MOST_ELEMENTS):
        element = _ebml_element(info, at)
        if element is None or element[2] < 0 or element[1] + element[2] > len(info):
            break
        ident, start, length = element
        raw = info[start:start + length]
        if ident == _DURATION and length in (4, 8):
            duration = struct.unpack(">f" if length == 4 else ">d", raw)[0]
        elif ident == _TIMECODE_SCALE and 1 <= length <= 8:
            scale = int.from_bytes(raw, "big") or scale
        at = start + length
    if duration is None:
        return None
    seconds = duration * scale / 1e9
    return seconds if 0 < seconds < _MOST_SECONDS else None


def _ebml_element(data: bytes, at: int) -> tuple[int, int, int] | None:
    """(ID, where its data starts, its data's length: -1 when unknown, a live stream's)
    of the element at `at`, or None where `data` holds no whole head of one."""
    ident = _ebml_vint(data, at, 4)
    if ident is None:
        return None
    width = ident[1]
    size = _ebml_vint(data, at + width, 8)
    if size is None:
        return None
    value, size_width = size
    marker = 1 << (7 * size_width)
    length = -1 if value == (marker - 1) else value
    return int.from_bytes(data[at:at + width], "big"), at + width + size_width, length


def _ebml_vint(data: bytes, at: int, most: int) -> tuple[int, int] | None:
    """(value without its length marker, width) of the variable-length integer at `at`."""
    if at >= len(data) or data[at] == 0:
        return None
    width = 8 - data[at].bit_length() + 1
    if width > most or at + width > len(data):
        return None
    value = int.from_bytes(data[at:at + width], "big") & ((1 << (7 * width)) - 1)
    return value, width


def _vorbis_length(head: bytes, size: int) -> float | None:
    """The file's size at a Vorbis stream's nominal bitrate (Opus states none)."""
    at = head.find(b"\x01vorbis")
    if at < 0 or at + 24 > len(head):
        return None
    nominal = int.from_bytes(head[at + 20:at + 24], "little", signed=True)
    return size * 8 / nominal if nominal > 0 else None


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


def _kind(head: bytes) -> str:
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"
    return "unknown"


def _container_floor(kind: str, head: bytes) -> float:
    """Bits per second no Ogg, WebM or MP4 goes under: its kind's floor, lowered (never
    raised: a container may hold several streams, and a header may be planted where no
    decoder reads it) by a Vorbis stream's own floor. 0 (a day's hold) for one holding
    FLAC, or an MP4 holding ALAC or PCM: a lossless codec's frame of silence is a few
    bytes for as many samples as its header allows, and a FLAC frame states its own
    sample rate, down to 1 Hz (ffmpeg plays 1,000 13-byte frames of 4,096 samples
    whose STREAMINFO says 192 kHz, each saying 8 kHz, as 512 s)."""
    if _LOSSLESS.search(head) if kind == "mp4" else (
            b"fLaC" in head or (kind == "webm" and _WEBM_LOSSLESS.search(head))):
        return 0.0
    floor = float(_FLOOR_BPS[kind])
    vorbis = head.find(b"\x01vorbis")
    if vorbis >= 0:
        floor = min(floor, _vorbis_floor(head[vorbis:]))
    return floor


def _u32le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def _wav_bps(head: bytes) -> tuple[float, int]:
    """Bits per second to bound a WAV's bytes by, and how many of its first bytes are
    its header: the PCM rate of its first `fmt ` (ffmpeg parses only the first), every
    byte after the first `data`'s header counted at it (a stated size that lies short,
    and a second `data` after the first's bytes, ffmpeg plays, at that rate); else the
    size floor, over all of it."""
    floor = _wav_floor(head)
    if _act_like(head):  # ffmpeg's ACT demuxer outscores its WAV one: G.729 follows
        return floor, 0
    position, rate, chunks = 12, 0.0, 0
    while position + 8 <= len(head) and chunks < _MOST_WAV_CHUNKS:
        chunks += 1
        chunk, length = head[position:position + 4], _u32le(head, position + 4)
        if chunk == b"fmt ":
            if rate:
                return floor, 0  # a second `fmt `: which one counts is a guess
            rate = _pcm_rate(head[position + 8:position + 8 + min(length, 40)])
        elif chunk == b"data":  # before any `fmt `: the size floor
            return (rate * 8, position + 8) if rate else (floor, 0)
        position += 8 + length + (length & 1)
    # `data` past the first bytes (a long chunk before it): all of it at the rate
    return (rate * 8 if rate else floor), 0


def _wav_floor(head: bytes) -> float:
    """A WAV's size floor in bits per second, scaled down for the sample rate of its
    first `fmt ` found (ffmpeg reads one after `data` too, on a file it can seek, and
    plays a rate under 8 kHz; a codec's bitrate follows its sample rate)."""
    at = head.find(b"fmt ", 12)
    if at < 0 or at + 16 > len(head):
        return float(_WAV_FLOOR_BPS)
    sample_rate = _u32le(head, at + 12)
    return _WAV_FLOOR_BPS * min(1.0, sample_rate / _LEAST_RATE) if sample_rate else float(
        _WAV_FLOOR_BPS)


def _act_like(head: bytes) -> bool:
    """ffmpeg's ACT probe (libavformat/act.c): a RIFF/WAVE head with a 16-byte `fmt `,
    zeros at 44-255 and 264-511 and 0x84 at 256 scores above the WAV demuxer, which
    then plays G.729 from byte 512, not the PCM the `fmt ` says."""
    return (len(head) >= 512 and head[16:20] == b"\x10\0\0\0" and head[256] == 0x84
            and not head[44:256].strip(b"\0") and not head[264:512].strip(b"\0"))


def _pcm_rate(fmt: bytes) -> float:
    """The fewest bytes per second a `fmt ` body can mean to a decoder. PCM: the lowest
    of the sample rate times the sample size, times the block align, and the stated rate;
    any of them 0 or past a real file's, no more than the size floor. Another format (an
    extensible one's subformat too) or a body cut short: the size floor, scaled down for
    a sample rate under 8 kHz (a codec's bitrate follows its sample rate)."""
    if len(fmt) < 14:
        return _WAV_FLOOR_BPS / 8
    tag, channels = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little")
    sample_rate, stated = _u32le(fmt, 4), _u32le(fmt, 8)
    block = int.from_bytes(fmt[12:14], "little")
    # a 14-byte WAVEFORMAT has no bits: ffmpeg takes 8
    bits = int.from_bytes(fmt[14:16], "little") if len(fmt) >= 16 else 8
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: its subformat GUID's first two bytes
        valid = int.from_bytes(fmt[18:20], "little") if len(fmt) >= 20 else 0
        if valid:  # ffmpeg's sample size is its valid bits when they are given
            bits = min(bits, valid) if bits else valid
        tag = int.from_bytes(fmt[24:26], "little") if len(fmt) >= 40 else 0
    floor = _WAV_FLOOR_BPS / 8 * min(1.0, sample_rate / _LEAST_RATE) if sample_rate else (
        _WAV_FLOOR_BPS / 8)
    if tag not in _PCM_TAGS:
        return floor
    rates: list[float] = [rate for rate in (sample_rate * channels * -(-bits // 8), sample_rate * block,
                               stated) if rate]
    if (not 0 < sample_rate <= _MOST_WAV_RATE or not 0 < channels <= _MOST_WAV_CHANNELS
            or not 0 < bits <= _MOST_WAV_BITS or not block or not stated):
        rates.append(floor)
    return float(min(rates))


def _vorbis_floor(ident: bytes) -> float:
    """Bits per second no Vorbis stream goes under: its smallest packet per half its
    longer block at its sample rate (`ident`: its identification header); 0 when they
    are cut short or past what a real stream holds."""
    if len(ident) < 29:
        return 0.0
    rate, exponent = _u32le(ident, 12), ident[28] >> 4
    if not 0 < rate <= _MOST_RATE or not 6 <= exponent <= 13:  # blocks of 64-8,192
        return 0.0
    return _VORBIS_LEAST_PACKET * 8 * rate / ((1 << exponent) // 2)


def _mp3_frame(head: bytes, at: int) -> int | None:
    """The length of an MPEG audio frame whose header is at `at`, or None when there is
    none (or a free-format one)."""
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
        return (12 * bitrate // sample_rate + padding) * 4
    samples = 1152 if layer == 2 or mpeg1 else 576
    return samples // 8 * bitrate // sample_rate + padding


def _mp3_floor(head: bytes, size: int) -> int | None:
    """The lowest bitrate of an MP3 (see the module's docstring); None when no frame is
    found among the first bytes (`_mp3_first`)."""
    return _LEAST_MP3_BPS if _mp3_first(head, size) is not None else None


def _mp3_first(head: bytes, size: int) -> int | None:
    """Where an MP3's first frame starts among the first bytes, None where none is (a
    frame is taken as the first only when the next one follows where its length says,
    or past the file's end: a lone sync pattern in other bytes is not a frame)."""
    found = _MP3_SYNC.search(head)
    tries = _MOST_SYNC_TRIES
    while found is not None and tries:
        tries -= 1
        at = found.start()
        frame = _mp3_frame(head, at)
        if frame is not None and frame > 4:
            following = at + frame
            if following >= size or _mp3_frame(head, following) is not None:
                return at
        found = _MP3_SYNC.search(head, at + 1)
    return None
