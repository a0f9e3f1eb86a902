"""The steady-frame fast path (`steady.py`) for a gpt-5-family stream, whose every chat
chunk Azure pads with an `obfuscation` member after `model` (OpenAI's
`stream_options.include_obfuscation`, on by default: random characters that even out the
frames' sizes against side channels). Its value differs on every frame, so a
`SteadyFrameTemplate` learned from one frame never matched the next: every frame of such
a stream was parsed whole and written again (issue 15).

`PaddedFrameTemplate` learns the frame's ends as `SteadyFrameTemplate` does, with the
suffix cut around the padding's value: a head (`],"created":...,"model":"...",
"obfuscation":"`) and a tail (`","object":...}`). A later frame matches when it ends with
the tail and, before it, holds a plain value (no quote, backslash or control character,
valid UTF-8) right after the head, found as the last quote before the tail: the value is
then one JSON string's bytes, the head's and tail's members are the frame's own, and the
frame is the learned one with another delta and another padding. It goes out with its
bytes kept (the padding too, as the general path keeps it) and the model spliced into
the head: what the general path writes (`orjson.dumps` keeps such a string as it is).
A padding that is not plain sends the frame down the general path.
"""

from __future__ import annotations

from typing import Any

import orjson

from azure_openai_proxy.normalize.steady import SteadyFrameTemplate, learned_ends, unplain

__all__ = ["PaddedFrameTemplate", "learn_template"]

_PADDING = b',"obfuscation":"'  # the head's end: the padding's value follows
_EMPTY = _PADDING + b'"'


class PaddedFrameTemplate(SteadyFrameTemplate):
    """A `SteadyFrameTemplate` for frames that differ from the learned one in their delta
    and in their `obfuscation` value. Its own ends (`_prefix`, `_suffix`) are those of
    the frames with the padding's member taken out: `match()`, `choices()` and `usage()`
    read a frame so, and `relayed()` and `relay()` keep the member."""

    __slots__ = ("_head", "_head_size", "_kept", "_out_head", "_tail", "_tail_size",
                 "_text_mid", "_text_mid_size", "_text_out_mid")

    def __init__(self, prefix: bytes, head: bytes, tail: bytes, out_head: bytes,
                 choice_tail: bytes = b"") -> None:
        kept = len(head) - len(_PADDING)  # the head's bytes before the padding's member
        super().__init__(prefix, head[:kept] + tail[1:], out_head[:-len(_PADDING)] + tail[1:],
                         choice_tail)
        self._head = head
        self._head_size = len(head)
        self._kept = kept
        self._out_head = out_head
        self._tail = tail
        self._tail_size = len(tail)
        # `relay()`'s plain text sits between `_text_start` and `_text_mid` (the choice's
        # end and the head), the padding between that and `_text_end`.
        self._text_mid = b'"}' + choice_tail + head
        self._text_mid_size = len(self._text_mid)
        self._text_out_mid = b'"}' + choice_tail + out_head
        self._text_end = tail + b"\n\n"
        self._text_end_size = len(self._text_end) if choice_tail else 1 << 62

    @classmethod
    def learn(cls, data: bytes, obj: dict[str, Any], model: str) -> PaddedFrameTemplate | None:
        """From a steady frame with a plain `obfuscation` value, its data and its parse
        (not yet changed), for frames to go out with `model`; None when the frame's
        shape does not allow it (the model must come before the padding, as in Azure's
        sorted members)."""
        padding = obj.get("obfuscation")
        if type(padding) is not str:
            return None
        member = b',"obfuscation":' + orjson.dumps(padding)
        at = data.rfind(member)
        if at < 0 or b"\\" in member:  # orjson escapes all that is not plain
            return None
        # The frame with an empty padding, whose ends are learned as a steady frame's:
        # it must be the parse with that value written in orjson's form (`learned_ends`
        # checks), so `at` was the frame's own member.
        bare = data[:at] + _EMPTY + data[at + len(member):]
        ends = learned_ends(bare, {**obj, "obfuscation": ""})
        if ends is None:
            return None
        prefix, suffix, azure, choice_tail = ends
        split = suffix.find(_EMPTY) + len(_PADDING)
        head, tail = suffix[:split], suffix[split:]
        if split < len(_PADDING) or suffix.count(_EMPTY) != 1 or azure not in head:
            return None
        return cls(prefix, head, tail, head.replace(azure, b'"model":' + orjson.dumps(model)),
                   choice_tail)

    def _head_at(self, data: bytes) -> int:
        """Where the head starts in a frame's `data` that ends with the tail after a
        plain padding right after the head; -1 if it does not."""
        end = len(data) - self._tail_size
        if not data.endswith(self._tail):
            return -1
        quote = data.rfind(b'"', 0, end)  # the padding's opening quote, if plain
        cut = quote + 1 - self._head_size
        if cut < 0 or data[cut:quote + 1] != self._head or unplain(data, quote + 1, end):
            return -1
        padding = data[quote + 1:end]
        if not padding.isascii():
            try:
                orjson.loads(b'"' + padding + b'"')  # as the general path's parse checks
            except orjson.JSONDecodeError:
                return -1
        return cut

    def _bare(self, data: bytes) -> bytes | None:
        """A frame's `data` without its plain padding's member; None if it has none."""
        cut = self._head_at(data)
        return None if cut < 0 else data[:cut + self._kept] + self._tail[1:]

    def match(self, data: bytes) -> dict[str, Any] | None:
        """`SteadyFrameTemplate.match` of the frame without its padding."""
        bare = self._bare(data)
        return None if bare is None else super().match(bare)

    def choices(self, data: bytes) -> list[Any] | None:
        """`SteadyFrameTemplate.choices` of the frame without its padding."""
        bare = self._bare(data)
        return None if bare is None else super().choices(bare)

    def relayed(self, data: bytes) -> bytes:
        """The event for a frame `match()` or `choices()` accepted (or the learned one):
        its bytes, the model spliced into the head."""
        quote = data.rfind(b'"', 0, len(data) - self._tail_size)
        cut = quote + 1 - self._head_size
        return b"".join((b"data: ", data[:cut], self._out_head, data[quote + 1:], b"\n\n"))

    def relay(self, event: bytes) -> bytes | None:
        """`SteadyFrameTemplate.relay`, the padding's value free: a plain text delta
        unparsed, the padding after it plain (the last quote before the tail opens it);
        any other delta through `match()` and `relayed()`."""
        start = self._text_start_size
        end = len(event) - self._text_end_size
        if start <= end and event[:start] == self._text_start and event[end:] == self._text_end:
            quote = event.rfind(b'"', start, end)
            cut = quote + 1 - self._text_mid_size  # the text's end
            # Azure's and OpenAI's paddings are letters and digits: `isalnum()` on the
            # value's slice costs less than the search (callgrind: ~700 instructions).
            if (start <= cut and event[cut:quote + 1] == self._text_mid
                    and unplain(event, start, cut) is None
                    and (event[quote + 1:end].isalnum() or unplain(event, quote + 1, end) is None)):
                if event.isascii():
                    self.chars += cut - start
                else:
                    try:
                        orjson.loads(event[quote:end + 1])  # the padding, as UTF-8
                        self.chars += len(orjson.loads(event[start - 1:cut + 1]))
                    except orjson.JSONDecodeError:
                        return None
                self.frames += 1
                return b"".join((event[:cut], self._text_out_mid, event[quote + 1:]))
        return self._relay_parsed(event)


def learn_template(data: bytes, obj: dict[str, Any], model: str) -> SteadyFrameTemplate | None:
    """The template learned from a steady frame (`SteadyFrameTemplate.learn`): a padded
    one when the frame carries an `obfuscation` string (a member of any other value is
    the same bytes in every frame, as any other member)."""
    if type(obj.get("obfuscation")) is str:
        return PaddedFrameTemplate.learn(data, obj, model)
    return SteadyFrameTemplate.learn(data, obj, model)
