"""What a budget reads of a form's files before the request runs: how long a
transcription's audio plays, how large an edit's pictures are (governance/mediasize.py),
from the first few KB of each file part of the spooled body. Read only for a key with a
budget, and only when its hold is made (`HeldForm`); the form goes out as it came."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.mediasize import (
    HEAD_BYTES,
    audio_length,
    audio_seconds,
    id3_length,
    picture_size,
)

__all__ = ["HeldForm"]

_AUDIO_PARTS = frozenset({"file"})
_PICTURE_PARTS = frozenset({"image", "image[]"})
# gpt-image-1 takes up to 16 pictures in an edit; more is Azure's 400, never a bill.
_MOST_PICTURES = 16
# A transcription takes one file; should a form carry more, Azure reads one of them,
# the first or the last as a reader binds a repeated name: the longer of those two is
# held. Where the parts are is known from the one reading of the form: finding the last
# reads no file.
_ALL_PARTS = 1 << 30
# An ID3 tag this short leaves the first window enough of the audio to find its first
# frames in (a frame is at most 1,729 bytes, a Xing header in the first): no second read.
_SHORT_TAG = HEAD_BYTES // 2


class HeldForm(dict[str, Any]):
    """A form's small fields (`RequestBody.held_fields`: those that price the request),
    with the spooled body they came from, so that a budget's hold can read its files'
    first bytes (`audio_seconds`, `picture_sizes`) when, and only when, it needs them."""

    __slots__ = ("_boundary", "_spool")

    def __init__(self, fields: dict[str, Any], spool: SpooledBody, boundary: bytes) -> None:
        super().__init__(fields)
        self._spool, self._boundary = spool, boundary

    def audio_seconds(self) -> float | None:
        """The most seconds the form's `file` can play (the longer of its first and its
        last, should it give more than one), or None when it has none. Reads at most two
        windows of `HEAD_BYTES` per file: its start, and past an MP3's ID3 tag when the
        tag is longer."""
        return self._seconds(lambda head, size, _audio: audio_seconds(head, size))

    def audio_length(self) -> float | None:
        """As `audio_seconds`, each file's length as its header states it where it does
        (governance/mediasize_audio.py `audio_length`): a best estimate, for the record
        of a request never answered, not for a hold."""
        return self._seconds(lambda head, size, audio: audio_length(head, audio, size) or (
            audio_seconds(head, size)))

    def _seconds(self, read: Callable[[bytes, int, int], float]) -> float | None:
        parts = self._spool.file_parts(self._boundary, _AUDIO_PARTS, _ALL_PARTS)
        if not parts:
            return None
        return max(self._file_seconds(start, end, read) for start, end in {parts[0], parts[-1]})

    def _file_seconds(self, start: int, end: int,
                      read: Callable[[bytes, int, int], float]) -> float:
        spool = self._spool
        head = spool.read_at(start, min(end, start + HEAD_BYTES))
        skip = id3_length(head)
        if skip:  # the audio starts after the tag: read there, unless enough is here
            after = min(start + skip, end)
            head = (head[skip:] if len(head) < HEAD_BYTES or skip <= _SHORT_TAG
                    else spool.read_at(after, min(end, after + HEAD_BYTES)))
        # the bound is of the whole part, the tag's bytes too: a tag that lies long
        # would hide the frames a decoder reads past it; a stated length is of the
        # audio after the tag (a cover picture is no audio)
        return read(head, end - start, end - start - min(skip, end - start))

    def picture_sizes(self) -> list[tuple[int, int] | None]:
        """(width, height) of each of the form's `image` / `image[]` pictures (the first
        16: what an edit takes), None where its header says none; one read of
        `HEAD_BYTES` each."""
        spool = self._spool
        return [picture_size(spool.read_at(start, min(end, start + HEAD_BYTES)))
                for start, end in spool.file_parts(self._boundary, _PICTURE_PARTS,
                                                   _MOST_PICTURES)]
