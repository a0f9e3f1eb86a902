"""The stream normalizer's fast path for the asynchronous content filter's annotation
frames, which it drops (`AnnotationFrameTemplate`, beside `steady.py`'s templates)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["ANNOTATION_HEAD", "AnnotationFrameTemplate", "in_orjson_form"]

# How an annotation frame in orjson's form starts (38 bytes): `from_bytes` is tried on
# no other (a call per finish and usage frame of a stream without any, ~3k, else).
ANNOTATION_HEAD = _OFFSETS = b'{"choices":[{"content_filter_offsets":'
# An annotation frame's bytes around its results, as Azure and the emulator write them
# (`AnnotationFrameTemplate.from_bytes`).
_RESULTS = b'},"content_filter_results":'
_REST = b',"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}'



def in_orjson_form(results: bytes) -> bool:
    """Whether `results` is a JSON object spelled exactly as orjson writes it: only then
    may its bytes stand in a template for what the general path would write."""
    try:
        value = orjson.loads(results)
    except orjson.JSONDecodeError:
        return False
    return type(value) is dict and orjson.dumps(value) == results

class AnnotationFrameTemplate:
    """The learned ends of a stream's asynchronous-filter annotation frames, which the
    normalizer drops (about one frame in ten of a long stream with the async filter on):
    `matches()` tells, without parsing the frame whole, that a frame is one of them.

    Learned from one annotation frame the general path has parsed and dropped, in
    orjson's form, its one choice's first member `content_filter_offsets`: the bytes up
    to the inside of that object (`{"choices":[{"content_filter_offsets":{`) and from
    its closing brace to the end. A later frame with those two ends whose middle makes
    one valid JSON object when braced (`{"check_offset":40,...}`) is the learned frame
    with other offsets: the middle cannot reach past the offsets object (a brace or
    quote that would escape it leaves the braced middle invalid), so every other member,
    of the choice and of the frame, is the learned one's. The general path would drop it
    alike: it reads neither the offsets nor anything the ends do not fix."""

    __slots__ = ("_event_end", "_event_end_size", "_event_start", "_event_start_size",
                 "_prefix", "_prefix_size", "_suffix", "_suffix_size", "dropped")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._prefix_size = len(prefix)
        self._suffix_size = len(suffix)
        # `drop()`'s ends, of the whole event, and the frames it dropped.
        self._event_start = b"data: " + prefix
        self._event_start_size = len(self._event_start)
        self._event_end = suffix + b"\n\n"
        self._event_end_size = len(self._event_end)
        self.dropped = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> AnnotationFrameTemplate | None:
        """The template `learn()` gives for a frame like `data`, from its bytes without
        parsing it whole (a stream's first annotation frame: ~65k instructions of the
        general path's parse, learning and drop): the offsets' members (flat: the first
        closing brace ends them), then `_RESULTS`, results in orjson's form with no
        `true` (no verdict can block, so the general path drops every frame the template
        matches), `_REST`: the bytes the general path's `learn()` proves. (Whether `data`
        itself matches, its offsets valid, is for `matches()`.) None for any other frame."""
        cut = data.find(b"}", len(_OFFSETS))
        if cut < 0 or not data.startswith(_OFFSETS) or not data.endswith(_REST) or (
                not data.startswith(_RESULTS, cut)):
            return None
        results = data[cut + len(_RESULTS):len(data) - len(_REST)]
        if results.find(b"true") != -1 or not in_orjson_form(results):
            return None
        return cls(_OFFSETS + b"{", data[cut:])

    @classmethod
    def learn(cls, data: bytes, obj: dict[str, Any]) -> AnnotationFrameTemplate | None:
        """From a dropped annotation frame's data and its parse; None when the frame's
        shape does not allow it."""
        choices = obj.get("choices")
        choice = choices[0] if type(choices) is list and len(choices) == 1 else None
        offsets = choice.get("content_filter_offsets") if type(choice) is dict else None
        if type(offsets) is not dict or not data.startswith(_OFFSETS):
            return None
        inside = orjson.dumps(offsets)  # b"{...}"
        cut = len(_OFFSETS) + len(inside) - 1  # at the offsets object's closing brace
        if data[len(_OFFSETS):cut + 1] != inside or orjson.dumps(obj) != data:
            return None
        return cls(_OFFSETS + b"{", data[cut:])

    def matches(self, data: bytes) -> bool:
        """Whether the frame is the learned annotation frame with other offsets."""
        start = self._prefix_size
        end = len(data) - self._suffix_size
        if end < start or not data.startswith(self._prefix) or not data.endswith(self._suffix):
            return False
        try:
            orjson.loads(b"{" + data[start:end] + b"}")
        except orjson.JSONDecodeError:
            return False
        return True

    def drop(self, data: bytes, at: int = 0) -> bool:
        """Whether `data[at:]`, one whole SSE event (nothing buffered before it; a piece's
        last event, tested where it starts without copying it), is the learned annotation
        frame with other offsets, as `matches()` tells of a frame's data; counted in
        `dropped` if so. No line break may hide in the offsets (as JSON whitespace): the
        event would then be another one. The offsets' bytes are parsed between the
        template's own braces (the prefix's last byte, the suffix's first), not copied
        into new ones."""
        start = at + self._event_start_size
        end = len(data) - self._event_end_size
        # (slices compared, not `startswith`/`endswith`: fewer instructions, Session 28)
        if end < start or data[at:start] != self._event_start or data[end:] != self._event_end:
            return False
        braced = data[start - 1:end + 1]
        # Line breaks: `splitlines()` of the braced offsets, not two `find(b, start, end)`
        # (their bounds' parsing: ~3.3k instructions a drop against ~1.9k, callgrind;
        # HTTP/1.1's lone annotation frames were ~1.1k worse than main with them).
        if len(braced.splitlines()[0]) != len(braced):
            return False
        try:
            orjson.loads(braced)
        except orjson.JSONDecodeError:
            return False
        self.dropped += 1
        return True
