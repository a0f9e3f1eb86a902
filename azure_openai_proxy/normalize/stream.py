"""Rewrite an Azure OpenAI chat/completions SSE stream so it reads exactly like OpenAI's.

`ChatStreamNormalizer` is a feed/finish object: the server feeds it upstream bytes and
writes what it returns to the client; at upstream EOF (or failure) it calls `finish()`.
It works for `chat.completion.chunk` and legacy `text_completion` streams alike.

What reaches the client, one output event per kept upstream event (never split/merged):

- Frames with no choice data are dropped: the prompt-annotation frame (`choices: []`
  with `prompt_filter_results`, or `prompt_annotations` on 2023 previews) and the
  asynchronous filter's annotation choices (no `delta`/`text`, only
  `content_filter_results`/`content_filter_offsets`). When Azure fields are kept, the
  dropped frame's prompt filter results ride on the next forwarded frame, so nothing
  a client may want is lost. The async filter's per-offset annotations are dropped.
- The usage frame (`choices: []` + `usage`) is kept, unless `strip_usage_frame` (the
  gateway asked for usage on its own behalf); `usage` is recorded either way.
- `id` and `created` are those of the first real frame, on every frame; `model` is
  `policy.client_model` or else the first non-empty model Azure sent; an empty
  `object` is filled from the stream's kind.
- A kept choice always has `delta` (chat) or `text` (legacy), so `choices[0].delta`
  never crashes a client.
- Comments, `event:`/`id:`-only blocks, non-JSON data and JSON that is not an object
  are dropped: OpenAI sends none, and naive line-splitting clients choke on them.
- Each event goes out as `data: <json>\\n\\n`. A frame that needs no change is forwarded
  as its raw bytes; a changed one is re-serialised (orjson), except the frames of the
  learned or presumed shapes, whose bytes go out with `model`'s value spliced (`steady.py`).
- The stream always ends with exactly one `data: [DONE]\\n\\n`, emitted when Azure's
  `[DONE]` arrives (later bytes are ignored) or by `finish()`. Before it, at most one
  synthesized error event, in OpenAI's `{"error": {...}}` shape that the openai SDKs raise
  as `APIError`: the content filter's, or `stream_interrupted` for a stream cut before
  `[DONE]` (`choices.closing_error` says when). None is added if Azure itself sent an
  error event (forwarded as is).

The general path after a frame's parse, and the stream's end, are `parsed.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.governance.estimate import text_length
from azure_openai_proxy.normalize.annotation import ANNOTATION_HEAD, AnnotationFrameTemplate
from azure_openai_proxy.normalize.choices import CONTENT_FILTER_MESSAGE, choice_chars
from azure_openai_proxy.normalize.parsed import ParsedFrames
from azure_openai_proxy.normalize.steady import SteadyFrameTemplate
from azure_openai_proxy.sse import MAX_EVENT_BYTES, SseDecoder, SseEvent

# As `sse.py` builds its events: a NamedTuple's own constructor is a Python function.
_new_event = tuple.__new__

__all__ = ["CONTENT_FILTER_MESSAGE", "ChatStreamNormalizer", "StreamPolicy"]

_LEARNING_TRIES = 3  # steady frames a template is tried from (one extra dumps each)


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How one stream is rewritten; built per request from the deployment's settings."""

    client_model: str | None  # written into every frame's `model`; None keeps Azure's
    keep_azure_fields: bool = True  # content_filter_results & co. kept or stripped
    strip_usage_frame: bool = False  # gateway injected include_usage: hide its frame
    error_on_content_filter: bool = True


class ChatStreamNormalizer(ParsedFrames):
    """Feed upstream bytes, get client bytes; `finish()` once at upstream EOF or failure.

    After the stream: `usage` (the usage frame's object, forwarded or not),
    `finish_reasons` (choice index -> finish_reason), `frames_in` (upstream data
    events, `[DONE]` included), `frames_out` (events written, `[DONE]` included),
    `done` (the client's stream is complete), `content_chars` (content relayed, counted as
    a prompt, `text_length`: the ledger's estimate when it ends before Azure's usage frame).
    """

    def __init__(self, policy: StreamPolicy, event_limit: int = MAX_EVENT_BYTES, *,
                 fast: bool = True) -> None:
        """`fast=False` keeps every frame on the general path (parsed, re-serialised
        when changed): the reference `steady.py`'s fast path is tested against. An event
        held past `event_limit` bytes, or past `MAX_EVENT_BYTES` (sse.py) whatever the
        caller allows, raises `UpstreamEventTooLarge` from `feed()`."""
        self._policy = policy
        self._decoder = SseDecoder(event_limit)
        self._id: str | None = None
        self._created: int | None = None
        self._model: str | None = policy.client_model
        self._object: str | None = None
        self._carried: dict[str, Any] = {}  # prompt filter results for the next frame
        self._filter_result: Any = None
        self._error_sent = False
        self._steady = False  # id/created/model/object known and nothing to carry
        # The steady frames' bytes, learned from one of the first few (steady.py).
        self._template: SteadyFrameTemplate | None = None
        self._learning = _LEARNING_TRIES if fast and policy.keep_azure_fields else 0
        # The async filter's annotation frames' ends (annotation.py), beside a template.
        self._annotation: AnnotationFrameTemplate | None = None
        self._annotation_learning = self._learning
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.finish_reasons: dict[int, str] = {}
        # Counted apart: a steady frame (one in, one out) adds to `_steady_frames` only.
        self._frames_in = 0
        self._frames_out = 0
        self._steady_frames = 0
        self._content_chars = 0

    @property
    def frames_in(self) -> int:
        template, annotation = self._template, self._annotation
        return (self._frames_in + self._steady_frames + (template.frames if template else 0)
                + (annotation.dropped if annotation else 0))

    @property
    def frames_out(self) -> int:
        template = self._template
        return self._frames_out + self._steady_frames + (template.frames if template else 0)

    @property
    def content_chars(self) -> int:
        template = self._template
        return self._content_chars + (template.chars if template else 0)

    def steady_relay(self) -> Callable[[bytes], bytes | None] | None:
        """`shortcuts()`' first."""
        return self.shortcuts()[0]

    def annotation_drop(self) -> Callable[[bytes], bool] | None:
        """`shortcuts()`' second."""
        return self.shortcuts()[1]

    def shortcuts(self) -> tuple[Callable[[bytes], bytes | None] | None,
                                 Callable[[bytes], bool] | None]:
        """What may take the stream's next piece before `feed()` does, while nothing is
        buffered and the stream is steady (None, None when nothing may now; asked again
        after each `feed()`): the template's `relay` (a whole steady event in, the client's
        event out, counted here; None for anything else, which then goes to `feed()`), and
        beside it the annotation template's `drop` (a whole event of the async filter's
        annotation frames in: True, and it is dropped and counted here) or None."""
        template = self._template
        # None while learning: a presumed template takes no frame until `feed()` completes it.
        if (template is None or self._learning or not self._steady or self.done
                or not self._decoder.idle()):
            return None, None
        annotation = self._annotation
        return template.relay, (annotation.drop if annotation is not None else None)

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes to write to the client for `chunk`: complete events only."""
        if self.done:
            return b""
        template = self._template
        if template is not None and self._steady:  # a read of one steady frame
            data = self._decoder.single(chunk)
            if data is not None:
                if data[:6] == b"[DONE]":  # as `_frame` ends it, without an SseEvent
                    self._frames_in += 1
                    return self._close(cut=False, reason=None)
                if self._learning:  # a template while learning: the role frame's (`_presume`)
                    out = template.complete(chunk)
                    if out is not None:  # its first content frame completed it
                        self._learning = 0
                        return out
                # _steady_relayed, inline: the hot path of a stream.
                rest = template.match(data)
                if rest is not None and rest.get("finish_reason") is None:
                    delta = rest.get("delta")
                    content = (delta.get("content")
                               if type(delta) is dict and len(delta) == 1 else None)
                    if type(content) is str:  # a plain content delta (`choice_chars`)
                        self._content_chars += (
                            len(content) if content.isascii() else text_length(content))
                    else:
                        self._content_chars += choice_chars(rest)
                    self._steady_frames += 1
                    return template.relayed(data)
                annotation = self._annotation
                if (annotation is None and self._annotation_learning  # learned unparsed
                        and data[:38] == ANNOTATION_HEAD):
                    annotation = self._annotation = AnnotationFrameTemplate.from_bytes(data)
                if annotation is not None and annotation.matches(data):
                    self._frames_in += 1  # dropped, as the general path drops it
                    return b""
                out = self._other_choice(template, data)  # the finish frame, usually
                if out is not None:
                    return out
                if self._policy.strip_usage_frame:  # Azure's usage frame, hidden
                    usage = template.usage(data)
                    if usage is not None:  # as `_frame` and `_usage_frame` take it
                        self._frames_in += 1
                        self.usage = usage
                        return b""
                # The frame is not of the learned shape: the general path, not tried again,
                # with the one event the decoder would return (`single()` said so).
                return self._frame(_new_event(SseEvent, (chunk, data, None, None, None)),
                                   steady_tried=True)
        data = self._decoder.single(chunk)
        if data is not None:  # one whole event, as Azure sends each: no list of events
            return self._frame(_new_event(SseEvent, (chunk, data, None, None, None)))
        cut = chunk.find(b"\n\n") + 2
        if 1 < cut < len(chunk) and chunk[-2:] == b"\n\n":
            return self._events(chunk, cut)
        return self._emit(self._decoder.feed(chunk))

    def _events(self, chunk: bytes, cut: int) -> bytes:
        """A read of several events that ends where an event does (Azure's first DATA
        frame holds the prompt filter's frame and the role frame): each piece up to a
        blank line fed alone, as relay.py's `_feed_events` cuts a steady stream's. The
        output does not depend on where the input is cut (test_stream_steady.py); a whole
        event takes `single()` and the steady paths, not the decoder's scan and a list
        of events (session 31). Every piece ends an event, so none is held, and none
        raises `UpstreamEventTooLarge` after earlier pieces' output. A loop: a read after
        a pause may hold thousands of events."""
        out = []
        start, size = 0, len(chunk)
        while 1 < cut < size:  # ("\n\n\n" ends it, its last blank line not found)
            out.append(self.feed(chunk[start:cut]))
            start = cut
            cut = chunk.find(b"\n\n", start) + 2
        out.append(self.feed(chunk[start:]))
        return b"".join(out)

    def finish(self, *, upstream_failed: str | None = None) -> bytes:
        """Close the client's stream: flush, add an error event if needed, then `[DONE]`.

        `upstream_failed` describes why the upstream stopped (timeout, reset...); it goes
        into the error event's message and must not contain secrets."""
        if self.done:
            return b""
        out = self._emit(self._decoder.flush())
        if self.done:
            return out
        return out + self._close(cut=True, reason=upstream_failed)

    def _emit(self, events: list[SseEvent]) -> bytes:
        if len(events) == 1:
            return self._frame(events[0])
        return b"".join([self._frame(event) for event in events])

    def _frame(self, event: SseEvent, *, steady_tried: bool = False) -> bytes:
        data = event.data
        if data is None or self.done:
            return b""
        template = self._template
        # An event of several data lines has them joined by b"\n" (JSON whitespace where
        # the cut fell between tokens): relayed raw, its later lines would reach the client
        # as lines of their own. The general path writes such a frame again in one line.
        if template is not None and self._steady and not steady_tried and b"\n" not in data:
            out = self._steady_relayed(template, data)  # never [DONE]
            if out is not None:
                return out
            annotation = self._annotation
            if annotation is not None and annotation.matches(data):
                self._frames_in += 1
                return b""
        self._frames_in += 1
        if data[:6] == b"[DONE]":
            return self._close(cut=False, reason=None)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if type(obj) is not dict:
            return b""
        if self._steady:
            fast = self._steady_frame(event, obj)
            if fast is not None:
                return fast
        if obj.get("error"):
            self._error_sent = True
            return self._out(event, obj, changed=False)
        choices = obj.get("choices")
        if not choices:
            return self._usage_frame(event, obj)
        if type(choices) is not list:
            return b""
        return self._choices_frame(event, obj, choices)

    def _steady_relayed(self, template: SteadyFrameTemplate, data: bytes) -> bytes | None:
        """A steady frame of the template's shape, relayed unparsed; None: the general path."""
        rest = template.match(data)
        if rest is None or rest.get("finish_reason") is not None:
            return None
        self._content_chars += choice_chars(rest)
        self._steady_frames += 1
        return template.relayed(data)

    def _other_choice(self, template: SteadyFrameTemplate, data: bytes) -> bytes | None:
        """A frame that is the learned one with another single choice (`template.choices`):
        what `_frame` and `_steady_frame` do with it, without parsing the whole frame and
        writing it again (a stream's finish frame: about 120 bytecodes and two whole-frame
        orjson calls fewer). None sends it down the general path."""
        choices = template.choices(data)
        if choices is None or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not dict or ("delta" not in choice and "text" not in choice) or (
                self._learning and choice.get("finish_reason") is None):
            return None  # (a content frame a presumed template missed: learned from)
        self._frames_in += 1
        if choice.get("finish_reason") is not None:
            self._note_finish(choices)
        self._content_chars += choice_chars(choice)
        self._frames_out += 1
        return template.relayed(data)
