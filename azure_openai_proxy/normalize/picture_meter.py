"""The streamed picture's meter: a gpt-image-1 generation or edit asked with `stream`
is relayed unchanged (no normalizer), and this reads, as it passes, the usage Azure puts
in its `image_generation.completed` / `image_edit.completed` event(s). The partial
pictures before them (`*.partial_image`, base64 of up to megabytes) are never parsed:
base64 has no `"`, so an event whose data lacks `"usage"` is passed over with one
search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from azure_openai_proxy.governance.mediatokens import picture_usage
from azure_openai_proxy.sse import MAX_RELAYED_EVENT_BYTES, SseDecoder

__all__ = ["PictureStreamMeter"]

_COMPLETED = frozenset({"image_generation.completed", "image_edit.completed"})
_MOST = 2**53  # a count past it is no count Azure made
_MOST_PICTURES = 10  # `n` past it is Azure's 400


class PictureStreamMeter:
    """Reads a streamed picture's events as they are relayed: `usage` is the usage of
    its completed event, summed over them when there are several (one a picture: see
    the emulator's `image_stream` module for what is known of Azure's `n` > 1), and
    `completed` counts them. `finish()` once the upstream stream has ended on its own
    (not cut by the client or an error); `measured()` is then Azure's usage, and
    `recorded(body, ...)` what the request's record says it used."""

    __slots__ = ("_decoder", "completed", "ended", "usage")

    def __init__(self, event_limit: int = MAX_RELAYED_EVENT_BYTES) -> None:
        self._decoder = SseDecoder(event_limit, MAX_RELAYED_EVENT_BYTES)
        self.usage: dict[str, Any] | None = None
        self.completed = 0
        self.ended = False

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            self._read(event.data)

    def finish(self) -> None:
        """The upstream stream ended: read a last event left without its blank line."""
        for event in self._decoder.flush():
            self._read(event.data)
        self.ended = True

    def measured(self) -> dict[str, Any] | None:
        """Azure's usage once its stream has ended on its own (`finish`): the record's,
        read before anything of the request is (a form is parsed only for an estimate);
        else None, and `recorded` decides."""
        return self.usage if self.ended else None

    def recorded(self, body: Mapping[str, Any] | None,
                 picture_sizes: Sequence[tuple[int, int] | None] | None = None,
                 form_bytes: int = 0) -> dict[str, Any]:
        """The request's usage, never $0 and never missing: Azure's, once its stream has
        ended or a completed event has come for each picture `body` asks for; else (the
        client left, the stream broke) what a budget holds for it, marked estimated:
        Azure may finish and bill it (`picture_usage`: the prompt's tokens, an edit's
        input pictures of `picture_sizes`, and the pictures asked for, `n` at their
        quality and size, with the partial pictures). `body` None: an edit whose form
        could not be read, estimated as the most a form of `form_bytes` could ask."""
        if self.usage is not None and (self.ended or self.completed >= _pictures(body)):
            return self.usage
        usage = picture_usage(body, picture_sizes, form_bytes)
        usage["estimated"] = True
        return usage

    def _read(self, data: bytes | None) -> None:
        # find(), not `in`: see sse.py
        if data is None or data.find(b'"usage"') == -1:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if type(obj) is not dict or obj.get("type") not in _COMPLETED:
            return
        usage = obj.get("usage")
        if type(usage) is not dict:
            return
        self.completed += 1
        self.usage = dict(usage) if self.usage is None else _summed(self.usage, usage)


def _summed(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`total` with `more`'s counts added, at the top and in its details' objects
    (`input_tokens_details`): a count is an int from 0 up; anything else is left as
    `total` has it."""
    for name, value in more.items():
        had = total.get(name)
        if type(value) is dict:
            total[name] = _summed(dict(had) if type(had) is dict else {}, value)
        elif _is_count(value):
            total[name] = min(had + value, _MOST) if _is_count(had) else value
    return total


def _pictures(body: Mapping[str, Any] | None) -> int:
    n = body.get("n", 1) if body is not None else _MOST_PICTURES
    return n if type(n) is int and 1 <= n <= _MOST_PICTURES else _MOST_PICTURES


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MOST
