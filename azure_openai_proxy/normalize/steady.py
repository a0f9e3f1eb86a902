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

`relay()` takes a whole event (`data: <frame>\\n\\n`) as a relay hands it over (the
pushed relay, `gateway/relay.py`) and checks, splices and counts it in one call. A plain
text delta (`{"content":"..."}`, nothing escaped) is not parsed at all: the ends around
its text are learned (the choice's members after the delta too), and the text is proved
a JSON string's value by holding nothing a JSON string holds only escaped (about 7k
instructions, where `feed()`'s SSE checks, `match()` and `relayed()` took about 20k).
Any other event goes through `match()` as before. `AnnotationFrameTemplate.drop()` (`annotation.py`)
takes the async filter's annotation frames whole the same way.

A gpt-5-family stream's chat chunks Azure pads with an `obfuscation` member after `model`
(OpenAI's `stream_options.include_obfuscation`, on by default: random characters that
even out the frames' sizes against side channels), another value on every frame: a
`SteadyFrameTemplate` never matched the next frame, and every one was parsed whole and
written again. `PaddedFrameTemplate` learns the frame's ends as `SteadyFrameTemplate`
does, with the suffix cut around the padding's value: a head (`],"created":...,"model":"...",
"obfuscation":"`) and a tail (`","object":...}`). A later frame matches when it ends with
the tail and, before it, holds a plain value (no quote, backslash or control character,
valid UTF-8) right after the head, found as the last quote before the tail: the value is
then one JSON string's bytes, the head's and tail's members are the frame's own, and the
frame is the learned one with another delta and another padding. It goes out with its
bytes kept (the padding too, as the general path keeps it) and the model spliced into
the head: what the general path writes (`orjson.dumps` keeps such a string as it is).
A padding that is not plain sends the frame down the general path.

A stream's first content frame was parsed whole to learn the template (~85k
instructions a stream over a relayed frame, issue 15). It is presumed instead from the
role frame the general path parses anyway (`SteadyFrameTemplate.presumed`): its members
after its delta and after its choice are those of every content frame; the first content
frame's `content_filter_results` bytes, parsed alone and in orjson's form, and its plain
text delta complete it (`complete()`) into the template the general path would learn from
that frame, so relaying by it writes what the general path writes. A frame it does not
complete goes down the general path, which learns the template as before. The first
annotation frame likewise (`AnnotationFrameTemplate.from_bytes`, annotation.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from azure_openai_proxy.normalize.annotation import AnnotationFrameTemplate, in_orjson_form
from azure_openai_proxy.normalize.choices import choice_chars

__all__ = ["AnnotationFrameTemplate", "PaddedFrameTemplate", "RoleFrameEnds",
           "SteadyFrameTemplate", "role_frame_ends"]

_HEAD = b'{"choices":[{"content_filter_results":'
_DELTA = b',"delta":'
_TAIL = b'],"created":'
_CHOICES = b'{"choices":['
_PADDING = b',"obfuscation":"'  # a padded head's end: the padding's value follows
_EMPTY = _PADDING + b'"'
_EVENT_HEAD = b"data: " + _HEAD
_TEXT = b'{"content":"'  # a plain delta's start
# A presumed template's prefix size until `complete()`: past any frame's, so none matches.
_UNKNOWN = 1 << 62
# What a JSON string holds only escaped or at its ends (line breaks among the control
# characters): a plain content delta's text without any is its string's value.
_UNPLAIN = re.compile(rb'["\\\x00-\x1f]').search
# The same, or a byte past ASCII: a text without any is plain and its UTF-8 (one search,
# where `_UNPLAIN` and `isascii()` were two: ~500 instructions a frame).
_UNPLAIN_WIDE = re.compile(rb'["\\\x00-\x1f\x80-\xff]').search
_JOIN = b"".join


def _plain_text(event: bytes, start: int, end: int) -> bool:
    """Whether `event[start:end]`, a JSON string's bytes between its quotes, holding a
    byte past ASCII, holds nothing escaped and is UTF-8 (orjson's check)."""
    if _UNPLAIN(event, start, end) is not None:
        return False
    try:
        orjson.loads(event[start - 1:end + 1])
    except orjson.JSONDecodeError:
        return False
    return True


def _chunk(event: bytes, lines: Sequence[bytes]) -> bytes:
    """`event` framed as `relay()` frames it when given `lines`."""
    size = len(event)
    return _JOIN((lines[size] if size < len(lines) else b"%x\r\n" % size, event, b"\r\n"))


def _learned_ends(data: bytes, obj: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes] | None:
    """A steady frame's ends for `SteadyFrameTemplate`, from its data and its parse (not
    yet changed): the bytes up to its choice's delta, those from the choice's end (the
    frame's members after `choices`), Azure's `"model":"..."` member among them, and the
    choice's members after its delta (empty when not fixed); None when the frame's shape
    does not allow a template."""
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
    # `find`, not `in`: a bytes needle makes `in` format and clear a TypeError (sse.py).
    if (suffix.find(b"\\") != -1 or suffix.find(b"{") != -1 or suffix.find(b"[") != -1
            or suffix.count(b"]") != 1 or suffix.count(b"}") != 1 or orjson.dumps(obj) != data):
        return None
    azure = b'"model":' + orjson.dumps(obj["model"])
    if suffix.count(azure) != 1:
        return None
    # The choice's members after its delta (`,"finish_reason":null,...}`): fixed
    # for `relay()`, which then parses only the delta's value.
    value = orjson.dumps(choice.get("delta"))
    choice_tail = data[len(prefix) + len(value):cut]
    if data[len(prefix):len(prefix) + len(value)] != value or choice.get(
            "finish_reason") is not None:
        choice_tail = b""
    return prefix, suffix, azure, choice_tail


# A role frame's ends for `SteadyFrameTemplate.presumed`: its frame members after
# `choices` (the suffix), Azure's `"model":"..."` member among them, and its choice's
# members after its delta.
RoleFrameEnds = tuple[bytes, bytes, bytes]


def role_frame_ends(data: bytes, obj: dict[str, Any]) -> RoleFrameEnds | None:
    """The ends of a stream's role frame (its data and its parse, not yet changed) that
    every later content frame shares, if the general path would learn a plain
    `SteadyFrameTemplate` from a content frame with them: one choice with a delta and no
    `finish_reason`, no `usage`, `error` or `obfuscation` member; else None."""
    if "usage" in obj or "error" in obj or "obfuscation" in obj:
        return None
    ends = _learned_ends(data, obj)
    if ends is None or not ends[3] or "delta" not in obj["choices"][0]:
        return None  # (no choice tail: a finish_reason, or a delta not in orjson's form)
    return ends[1], ends[2], ends[3]


class SteadyFrameTemplate:
    """The learned ends of a stream's steady frames; `match()` a frame's data against it,
    `relayed()` the event to write for a match. `relay()` does both for a whole event
    whose choice differs from the learned one only in its delta, and counts it."""

    __slots__ = ("_out_tail", "_prefix", "_prefix_size", "_suffix", "_suffix_size",
                 "_text_chunk_end", "_text_end", "_text_end_size", "_text_out_end",
                 "_text_out_end_size", "_text_start", "_text_start_size", "_usage_head", "chars",
                 "frames")

    def __init__(self, prefix: bytes, suffix: bytes, out_suffix: bytes,
                 choice_tail: bytes = b"") -> None:
        self._prefix = prefix
        self._suffix = suffix
        # Sizes and the event's end computed once, not per frame.
        self._prefix_size = len(prefix)
        self._suffix_size = len(suffix)
        self._out_tail = out_suffix + b"\n\n"
        # `relay()`'s ends of a whole event whose delta is plain text, around the text:
        # `data: {"choices":[{...,"delta":{"content":"` and `"},"finish_reason":null,
        # ...}],...}\n\n`. Without a `choice_tail` (none learned) no event matches them.
        self._text_start = b"data: " + prefix + b'{"content":"'
        self._text_start_size = len(self._text_start)
        self._text_end = b'"}' + choice_tail + suffix + b"\n\n"
        self._text_end_size = len(self._text_end) if choice_tail else 1 << 62
        self._text_out_end = b'"}' + choice_tail + self._out_tail
        self._text_out_end_size = len(self._text_out_end)
        self._text_chunk_end = self._text_out_end + b"\r\n"  # as a chunk's end (`relay`)
        # The usage frame's bytes before its `usage` value: no choices, the learned
        # members, then `usage` (`usage()`).
        self._usage_head = b'{"choices":[' + suffix[:-1] + b',"usage":'
        # What `relay()` passed: frames, and their characters of text (`choice_chars`).
        self.frames = 0
        self.chars = 0

    @classmethod
    def learn(cls, data: bytes, obj: dict[str, Any], model: str) -> SteadyFrameTemplate | None:
        """From a steady frame's data and its parse (not yet changed), for frames to go
        out with `model`; None when the frame's shape does not allow it. A frame with an
        `obfuscation` string gets a `PaddedFrameTemplate` (a member of any other value is
        the same bytes in every frame, as any other member)."""
        if type(obj.get("obfuscation")) is str:
            return PaddedFrameTemplate.learn(data, obj, model)
        ends = _learned_ends(data, obj)
        if ends is None:
            return None
        prefix, suffix, azure, choice_tail = ends
        return cls(prefix, suffix, suffix.replace(azure, b'"model":' + orjson.dumps(model)),
                   choice_tail)

    @classmethod
    def presumed(cls, ends: RoleFrameEnds, model: str) -> SteadyFrameTemplate:
        """The template presumed from a stream's role frame (`role_frame_ends`), for
        frames to go out with `model`: the content frames' ends but for their results,
        which the first content frame's `complete()` gives. Until then it matches no
        frame (`match`, `relay`); `choices()` and `usage()` read only the suffix."""
        suffix, azure, choice_tail = ends
        template = cls(_HEAD, suffix, suffix.replace(azure, b'"model":' + orjson.dumps(model)),
                       choice_tail)
        template._prefix_size = template._text_start_size = _UNKNOWN
        return template

    def complete(self, event: bytes) -> bytes | None:
        """The event to write for `event` (one whole event, nothing buffered before it) if
        it completes a presumed template, counted as `relay()` counts it: a content frame
        with the role frame's members after its delta, whose results' bytes (up to the
        first `,"delta":`) are one JSON object in orjson's form and whose delta is plain
        text (`relay()` takes it unparsed). The frame is then in orjson's form whole, as
        the one the general path learns its template from, and the template is that one
        (its prefix set, not built again: ~8k instructions). Else None, the template
        still presumed: the frame goes down the general path, which learns from it (a
        frame spelled otherwise, completing it, would have the frames after it relayed
        in Azure's spelling where the general path writes orjson's)."""
        start = len(_EVENT_HEAD)
        end = event.find(_DELTA, start)
        text = end + len(_DELTA) + len(_TEXT)  # where a plain delta's text starts
        stop = len(event) - self._text_end_size  # and ends
        if (end < 0 or stop < text or event[:start] != _EVENT_HEAD
                or event[end + len(_DELTA):text] != _TEXT or event[stop:] != self._text_end
                or _UNPLAIN(event, text, stop) is not None):
            return None
        results = event[start:end]
        if not in_orjson_form(results):
            return None
        # What `__init__` derives from the prefix, the rest being the role frame's.
        self._prefix = prefix = _HEAD + results + _DELTA
        self._prefix_size = len(prefix)
        self._text_start = event[:text]
        self._text_start_size = text
        out = self.relay(event)  # its plain text's path: None only for bytes not UTF-8
        if out is None:
            self._prefix_size = self._text_start_size = _UNKNOWN
        return out

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

    def choices(self, data: bytes) -> list[Any] | None:
        """The choices of a frame that is the learned frame with another choices array
        (the finish frame, a frame with other filter results), the array in orjson's
        form: then the frame re-serialised with `model` set is `relayed(data)`, as for
        the learned frame itself. Else None.

        Why: the suffix's members are the learned frame's top-level members after its
        choices (the learned suffix holds no bracket but its leading `]`, no brace but
        its last and no backslash), and an array that orjson writes back byte for byte
        is one whole JSON value: nothing can hide between the array and the suffix."""
        end = len(data) - self._suffix_size + 1  # up to the array's closing bracket
        if end <= 12 or data[:12] != _CHOICES or not data.endswith(self._suffix):
            return None
        array = data[11:end]
        try:
            choices = orjson.loads(array)
        except orjson.JSONDecodeError:
            return None
        if type(choices) is not list or orjson.dumps(choices) != array:
            return None
        return choices

    def usage(self, data: bytes) -> dict[str, Any] | None:
        """The `usage` object of the stream's usage frame: `{"choices":[]`, the learned
        members, then `"usage":{...}}` and nothing else (orjson takes one whole value
        only, so no member can follow it). None for any other frame."""
        head = self._usage_head
        if data[-1:] != b"}" or not data.startswith(head):
            return None
        try:
            usage = orjson.loads(data[len(head):-1])
        except orjson.JSONDecodeError:
            return None
        return usage if type(usage) is dict else None

    def relayed(self, data: bytes) -> bytes:
        """The event for a frame `match()` accepted: its bytes, the model spliced."""
        return b"".join((b"data: ", data[:-self._suffix_size], self._out_tail))

    def relay(self, event: bytes, lines: Sequence[bytes] | None = None) -> bytes | None:
        """The event to write for `event`, one whole SSE event (`data: <frame>\\n\\n`,
        nothing buffered before it) that is the learned frame with another delta; the
        frame counted in `frames` and `chars`. None for anything else (no change made):
        the caller's general path then takes it. With `lines`, the event framed as one
        HTTP/1.1 chunk: `lines[size]` (a chunk's size line, for sizes below
        `len(lines)`), the event, CRLF, built in one copy of the event (the pushed relay
        writes it as it is: the event spliced, then framed, was copied twice more).

        The usual delta, `{"content":"..."}` whose text holds nothing escaped, is not
        parsed at all: the bytes before the text and after it are learned (the choice's
        members after its delta too: `finish_reason` the learned `null`), and nothing
        between them that a JSON string holds only escaped (a quote, a backslash, a
        control character, line breaks among them) makes those bytes the string's value:
        the frame is the learned one with another text. They are counted by their bytes
        (nothing escaped, they are the text's UTF-8: a prompt's rule, `text_length`),
        checked as UTF-8 by orjson when not ASCII. Any other event goes
        through `match()` and `relayed()`, as `ChatStreamNormalizer.feed` takes it."""
        start = self._text_start_size
        end = len(event) - self._text_end_size
        if (start <= end and event[:start] == self._text_start and event[end:] == self._text_end
                and (_UNPLAIN_WIDE(event, start, end) is None or _plain_text(event, start, end))):
            # (a text not UTF-8 goes on to `_relay_parsed`, whose parse refuses it too)
            self.chars += end - start  # its UTF-8 bytes, nothing escaped (`text_length`)
            self.frames += 1
            if lines is None:
                return event[:end] + self._text_out_end
            size = end + self._text_out_end_size
            return _JOIN((lines[size] if size < len(lines) else b"%x\r\n" % size,
                          event[:end], self._text_chunk_end))
        out = self._relay_parsed(event)
        return out if lines is None or out is None else _chunk(out, lines)

    def _relay_parsed(self, event: bytes) -> bytes | None:
        """`relay()` for a delta that is not plain text: the frame's data through
        `match()` and `relayed()`, as `ChatStreamNormalizer.feed` takes one event."""
        if not event.startswith(self._prefix, 6) or event[:6] != b"data: " or event[-2:] != b"\n\n":
            return None  # (the prefix first: an annotation frame fails there)
        # No b"\n" or b"\r" inside. Two finds, not `splitlines()`: it copies the line
        # and builds a list (callgrind, a 460-byte frame: 5.8k instructions against
        # 2.7k), and a content frame with the async filter's annotation in one piece
        # comes here before it is cut into events (`gateway/streampush.py`). The data
        # copied first, its finds without bounds: `find(b, start, end)` parses its
        # bounds at a cost above the copy's (callgrind, a 430-byte event with an escape:
        # ~1.2k instructions more a call, session 31's review).
        data = event[6:-2]
        if not data or data.find(b"\n") >= 0 or data.find(b"\r") >= 0:
            return None
        rest = self.match(data)
        if rest is None or rest.get("finish_reason") is not None:
            return None
        self.chars += choice_chars(rest)
        self.frames += 1
        return self.relayed(data)


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
        # The plain template's ends for its own `relayed()` and `relay()` (and the
        # framed relay's chunk end), overridden here: not kept (~570 bytes a gpt-5 stream).
        self._out_tail = self._text_out_end = self._text_chunk_end = b""

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
        ends = _learned_ends(bare, {**obj, "obfuscation": ""})
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
        if cut < 0 or data[cut:quote + 1] != self._head or _UNPLAIN(data, quote + 1, end):
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

    def relay(self, event: bytes, lines: Sequence[bytes] | None = None) -> bytes | None:
        """`SteadyFrameTemplate.relay`, the padding's value free: a plain text delta
        unparsed, the padding after it plain (the last quote before the tail opens it);
        any other delta through `match()` and `relayed()`; with `lines`, framed alike."""
        start = self._text_start_size
        end = len(event) - self._text_end_size
        if start <= end and event[:start] == self._text_start and event[end:] == self._text_end:
            quote = event.rfind(b'"', start, end)
            cut = quote + 1 - self._text_mid_size  # the text's end
            # Azure's and OpenAI's paddings are letters and digits: `isalnum()` on the
            # value's slice costs less than the search (callgrind: ~700 instructions).
            if (start <= cut and event[cut:quote + 1] == self._text_mid
                    and _UNPLAIN(event, start, cut) is None
                    and (event[quote + 1:end].isalnum() or _UNPLAIN(event, quote + 1, end) is None)):
                if not event.isascii():
                    try:
                        orjson.loads(event[quote:end + 1])  # the padding, as UTF-8
                        orjson.loads(event[start - 1:cut + 1])  # and the text
                    except orjson.JSONDecodeError:
                        return None
                self.chars += cut - start  # the text's UTF-8 bytes (`text_length`)
                self.frames += 1
                if lines is None:
                    return _JOIN((event[:cut], self._text_out_mid, event[quote + 1:]))
                size = cut + len(self._text_out_mid) + len(event) - quote - 1
                return _JOIN((lines[size] if size < len(lines) else b"%x\r\n" % size,
                              event[:cut], self._text_out_mid, event[quote + 1:], b"\r\n"))
        out = self._relay_parsed(event)
        return out if lines is None or out is None else _chunk(out, lines)
