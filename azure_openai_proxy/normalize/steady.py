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

__all__ = ["SteadyFrameTemplate"]

_HEAD = b'{"choices":[{"content_filter_results":'
_DELTA = b',"delta":'
_TAIL = b'],"created":'


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
