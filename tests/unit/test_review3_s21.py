"""Review 3 of session 21's lead commits (d39949c..2ef3d62): each test here fails on main
and names the defect it proves. Real bytes, no mocks."""

from __future__ import annotations

from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes and 1152 samples a frame
_FRAME = b"\xff\xfb\x90\x00" + bytes(413)


def _transcription(audio: bytes) -> RequestBody:
    raw = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
           b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
           b"Content-Type: audio/mpeg\r\n\r\n" + audio + b"\r\n--b--\r\n")
    return RequestBody(spool=SpooledBody(raw, None, len(raw)), boundary=b"b")


def _id3(claimed: int) -> bytes:
    """An ID3v2.3 tag header stating `claimed` bytes of tag after it (synchsafe)."""
    return b"ID3\x03\x00\x00" + bytes([(claimed >> 21) & 0x7F, (claimed >> 14) & 0x7F,
                                       (claimed >> 7) & 0x7F, claimed & 0x7F])


def test_an_id3_tag_that_lies_long_does_not_take_an_mp3_under_its_floor() -> None:
    # 24,000 real frames (~627 s at 128 kbit/s, 10 MB) right after a 10-byte ID3 header
    # whose size claims all but the last 2,000 bytes. audio_seconds' contract (its
    # docstring: `size` is "the tag's too: a decoder may read past a tag that lies") and
    # README's "never under its size at ... MP3 448 kbit/s" both say the record of the
    # unanswered request is at least 10 MB / 448 kbit/s = 179 s. 55c61a8 gives
    # audio_length (and the audio_seconds bound inside it) the size less the claimed tag.
    # (ffmpeg seeks past a tag's stated size, so it may play only the last 2,000 bytes:
    # then the record is right and the contract and README are what is wrong.)
    frames = _FRAME * 24_000
    audio = _id3(len(frames) - 2_000) + frames
    read = read_form(_transcription(audio), "audio/transcriptions")
    assert read.audio_seconds is not None
    # main: 0.13 s (2,000 bytes at 128 kbit/s), for a file the hold held at 627 s+
    assert read.audio_seconds >= len(audio) * 8 / 448_000, read.audio_seconds


def _element(ident: bytes, data: bytes) -> bytes:
    return ident + bytes([0x80 | len(data)]) + data  # a one-byte size: under 127 bytes


def test_an_honest_webm_of_pcm_is_recorded_at_its_duration() -> None:
    import struct

    from azure_openai_proxy.governance.mediasize_audio import audio_length

    # 60 s of 48 kHz stereo 16-bit PCM in WebM/Matroska (Chrome's MediaRecorder writes
    # `audio/webm;codecs=pcm`; fix-webm-duration style tools add the Duration): 1,536
    # kbit/s, 11.5 MB, its Info's Duration honest. 55c61a8's 512 kbit/s WebM floor makes it
    # 180 s; `_container_floor` lowers the floor for FLAC in WebM ("fLaC") and for PCM in
    # MP4 (`_LOSSLESS`), not for Matroska's A_PCM codec.
    ebml = _element(b"\x1a\x45\xdf\xa3", _element(b"\x42\x82", b"webm"))
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
    info = _element(b"\x15\x49\xa9\x66", _element(b"\x2a\xd7\xb1", b"\x0f\x42\x40")
                    + _element(b"\x44\x89", struct.pack(">d", 60_000.0)))
    track = _element(b"\xae", _element(b"\xd7", b"\x01") + _element(b"\x83", b"\x02")
                     + _element(b"\x86", b"A_PCM/INT/LIT")
                     + _element(b"\xe1", _element(b"\xb5", struct.pack(">f", 48_000.0))
                                + _element(b"\x9f", b"\x02") + _element(b"\x62\x64", b"\x10")))
    tracks = _element(b"\x16\x54\xae\x6b", track)
    cluster = b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff" + bytes(64)
    head = ebml + segment + info + tracks + cluster
    size = 60 * 48_000 * 2 * 2
    # main: 180.0 (11.52 MB at 512 kbit/s); 55c61a8^: 60.0
    assert audio_length(head, size) == 60.0
