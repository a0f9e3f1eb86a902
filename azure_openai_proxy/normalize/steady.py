"""The stream normalizer's fast path for Azure's steady content frames: most of a chat
stream is frames that differ from the one before only in their delta, and parsing each
whole (its `content_filter_results` alone is five objects) and writing it back out cost
more than everything else the gateway does per frame (issue 15).

`SteadyFrameTemplate` is learned from one frame the general path has parsed and found
steady (one choice; `id`, `created`, `model`, `object` those of the stream): its bytes up
to the choice's delta (`{"choices":[{"content_filter_results":{...},"delta":`) and from
the end of the choice to the end (`],"created":...,"model":"...",...}`). A later frame
with the same two ends is proved to be the same shape by parsing only what lies between
them (`{"delta":...,"finish_reason":null,"index":0,"logprobs":null}`): that piece being
one valid JSON object, the frame is the learned one with another choice tail. It goes out
with its bytes kept and the model's value spliced in the suffix, never re-serialised.

When is that exactly what the general path (parse, set `model`, `orjson.dumps`) writes?
Whenever the frame is in orjson's own form (compact, keys in place, UTF-8 not escaped):
Azure's frames are, and the learned frame must be (it is checked). A frame written
otherwise by Azure in its delta gets the same JSON value with Azure's own spelling kept.
The suffix is only used when it holds no backslash (so every quote in it delimits a
string) and no bracket but its leading `]` and final `}`: then its members, `model`
among them, are the top-level object's own.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["AnnotationFrameTemplate", "SteadyFrameTemplate"]

_HEAD = b'{"choices":[{"content_filter_results":'
_DELTA = b',"delta":'
_TAIL = b'],"created":'
_OFFSETS = b'{"choices":[{"content_filter_offsets":'


class SteadyFrameTemplate:
    """The learned ends of a stream's steady frames; `match()` a frame's data against it,
    `relayed()` the event to write for a match."""

    __slots__ = ("_out_tail", "_prefix", "_prefix_size", "_suffix", "_suffix_size")

    def __init__(self, prefix: bytes, suffix: bytes, out_suffix: bytes) -> None:
        self._prefix = prefix
        self._suffix = suffix
        # Sizes and the event's end computed once, not per frame.
        self._prefix_size = len(prefix)
        self._suffix_size = len(suffix)
        self._out_tail = out_suffix + b"\n\n"

    @classmethod
    def learn(cls, data: bytes, obj: dict[str, Any], model: str) -> SteadyFrameTemplate | None:
        """From a steady frame's data and its parse (not yet changed), for frames to go
        out with `model`; None when the frame's shape does not allow it."""
        choices = obj.get("choices")
        choice = choices[0] if type(choices) is list and len(choices) == 1 else None
        if (type(choice) is not dict or "content_filter_results" not in choice
                or not data.startswith(_HEAD) or type(obj.get("model")) is not str):
            return None
        prefix = _HEAD + orjson.dumps(choice["content_filter_results"]) + _DELTA
        cut = data.rfind(_TAIL)
        if not data.startswith(prefix) or cut <= len(prefix):
            return None
        suffix = data[cut:]
        if (b"\\" in suffix or b"{" in suffix or b"[" in suffix or suffix.count(b"]") != 1
                or suffix.count(b"}") != 1 or orjson.dumps(obj) != data):
            return None
        azure = b'"model":' + orjson.dumps(obj["model"])
        if suffix.count(azure) != 1:
            return None
        return cls(prefix, suffix, suffix.replace(azure, b'"model":' + orjson.dumps(model)))

    def match(self, data: bytes) -> dict[str, Any] | None:
        """The frame's choice without its `content_filter_results` (the learned one), if
        the frame has the learned ends and one valid choice between them; else None."""
        start = self._prefix_size
        end = len(data) - self._suffix_size
        if end <= start or not data.startswith(self._prefix) or not data.endswith(self._suffix):
            return None
        try:
            # A slice and a concatenation: cheaper than a memoryview for ~100 bytes.
            rest = orjson.loads(b'{"delta":' + data[start:end])
        except orjson.JSONDecodeError:
            return None
        # A repeated filter key would make the choice the general path sees another one.
        if type(rest) is not dict or "content_filter_results" in rest:
            return None
        return rest

    def relayed(self, data: bytes) -> bytes:
        """The event for a frame `match()` accepted: its bytes, the model spliced."""
        return b"".join((b"data: ", data[:-self._suffix_size], self._out_tail))


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

    __slots__ = ("_prefix", "_prefix_size", "_suffix", "_suffix_size")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._prefix_size = len(prefix)
        self._suffix_size = len(suffix)

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
