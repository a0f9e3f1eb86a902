"""The stream normalizer's general path after the parse: what `ChatStreamNormalizer`
(stream.py) does with a frame parsed whole (a steady frame's checks, the usage and prompt
filter frames, a frame of choices), and the stream's end. `ParsedFrames` holds no state of
its own: its methods read and write the normalizer's (declared here for the type checker),
and only `ChatStreamNormalizer` derives from it. Split from stream.py by job (session 31),
the code unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from azure_openai_proxy.normalize.annotation import AnnotationFrameTemplate
from azure_openai_proxy.normalize.choices import (
    CHOICE_FILTER_KEYS,
    PROMPT_FILTER_KEYS,
    blocking_verdict,
    choice_chars,
    closing_error,
    is_annotation,
    strip_azure_fields,
)
from azure_openai_proxy.normalize.steady import SteadyFrameTemplate, role_frame_ends
from azure_openai_proxy.sse import SseEvent

if TYPE_CHECKING:  # stream.py derives from this module's class
    from azure_openai_proxy.normalize.stream import StreamPolicy

__all__ = ["DONE", "ParsedFrames"]

DONE = b"data: [DONE]\n\n"
_AZURE_FIELDS = frozenset(PROMPT_FILTER_KEYS + CHOICE_FILTER_KEYS)


def _sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class ParsedFrames:
    """The general path's rewrite of a parsed frame, for `ChatStreamNormalizer`."""

    # An annotation's verdict blocked the answer (no finish says so). A class default,
    # set on the instance only for such a stream: a 22nd instance attribute cost 9k
    # instructions a stream in callgrind (the instances' shared keys outgrown).
    _blocked = False
    claim: Callable[[list[str]], None] | None = None  # so too: a stored chat's (ownership.py)

    # The normalizer's state, set by its `__init__` (stream.py).
    _policy: StreamPolicy
    _id: str | None
    _created: int | None
    _model: str | None
    _object: str | None
    _carried: dict[str, Any]
    _filter_result: Any
    _error_sent: bool
    _steady: bool
    _template: SteadyFrameTemplate | None
    _learning: int
    _annotation: AnnotationFrameTemplate | None
    _annotation_learning: int
    done: bool
    usage: dict[str, Any] | None
    finish_reasons: dict[int, str]
    _frames_out: int
    _content_chars: int

    def _steady_frame(self, event: SseEvent, obj: dict[str, Any]) -> bytes | None:
        """The hot path: a one-choice content frame that needs no change goes out raw.

        None sends the frame down the general path, which gives the same result."""
        choices = obj.get("choices")
        if type(choices) is not list or len(choices) != 1 or "usage" in obj:
            return None
        choice = choices[0]
        if (
            type(choice) is not dict
            or ("delta" not in choice and "text" not in choice)
            or obj.get("id") != self._id
            or obj.get("created") != self._created
            or obj.get("object") != self._object
            or "error" in obj
        ):
            return None
        if not self._policy.keep_azure_fields and (
            not _AZURE_FIELDS.isdisjoint(obj) or not _AZURE_FIELDS.isdisjoint(choice)
        ):
            return None
        if choice.get("finish_reason") is not None:
            self._note_finish(choices)
        elif self._learning and "delta" in choice:
            self._learning -= 1
            model = self._model
            assert model is not None  # steady
            data = event.data or b""
            # (A presumed template replaced here counted nothing: it matched no frame.)
            template = self._template = SteadyFrameTemplate.learn(data, obj, model)
            if template is not None:
                self._learning = 0
                self._content_chars += choice_chars(choice)
                self._frames_out += 1
                # What `_out` would write: learning proved the frame in orjson's form
                # with `model` once, in the suffix the template splices (no dumps again).
                return template.relayed(data)
        self._content_chars += choice_chars(choice)
        if obj.get("model") == self._model:
            return self._out(event, obj, changed=False)
        obj["model"] = self._model  # the client's name, or Azure's first one
        return self._out(event, obj, changed=True)

    def _usage_frame(self, event: SseEvent, obj: dict[str, Any]) -> bytes:
        usage = obj.get("usage")
        if type(usage) is not dict:
            # the prompt-annotation frame, or anything else without choice data
            if self._policy.keep_azure_fields:
                for key in PROMPT_FILTER_KEYS:
                    if key in obj:
                        self._carried[key] = obj[key]
                        self._steady = False
            return b""
        self.usage = usage
        if self._policy.strip_usage_frame:
            return b""
        changed = self._restore(obj)
        if type(obj.get("choices")) is not list:
            obj["choices"] = []
            changed = True
        if not self._policy.keep_azure_fields:
            changed = strip_azure_fields(obj, []) or changed
        return self._out(event, obj, changed=changed)

    def _choices_frame(self, event: SseEvent, obj: dict[str, Any], choices: list[Any]) -> bytes:
        kept = [c for c in choices if type(c) is dict and not is_annotation(c)]
        changed = len(kept) != len(choices)
        # The first real frame's (the role frame's) ends, before it is changed (`_presume`).
        ends = (role_frame_ends(event.data or b"", obj) if self._id is None and self._learning
                and not changed and self._template is None and len(kept) == 1 else None)
        own = (obj.get("id"), obj.get("created"), obj.get("object")) if ends else None
        # A block the async filter found after the model's stop comes only as an
        # annotation with `filtered: true`: the stream then ends with the content filter's
        # error, never silently. (Never learned: the template drops only what carries no
        # such verdict.) A verdict that blocks is spelled with `true`: a frame without
        # one, the usual annotation, is not searched.
        blocked = (changed and (event.data or b"").find(b"true") != -1
                   and self._note_block(choices))
        if not kept:
            if not blocked and self._annotation_learning and self._annotation is None:
                self._annotation_learning -= 1
                self._annotation = AnnotationFrameTemplate.learn(event.data or b"", obj)
            return b""
        if changed:
            obj["choices"] = kept
        self._note_finish(kept)
        for choice in kept:
            self._content_chars += choice_chars(choice)
        if self._policy.strip_usage_frame and "usage" in obj:
            if type(obj["usage"]) is dict:
                self.usage = obj["usage"]
            del obj["usage"]
            changed = True
        elif type(obj.get("usage")) is dict:
            self.usage = obj["usage"]
        changed = self._restore(obj) or changed
        key, empty = ("text", "") if self._object == "text_completion" else ("delta", {})
        for choice in kept:
            if "delta" not in choice and "text" not in choice:
                choice[key] = empty
                changed = True
        if self._carried:
            obj.update(self._carried)
            self._carried = {}
            changed = True
            # Nothing left to carry: the next frame may take the steady path.
            self._steady = None not in (self._id, self._created, self._model, self._object)
        if not self._policy.keep_azure_fields:
            changed = strip_azure_fields(obj, kept) or changed
        elif ends is not None and self._steady and own == (self._id, self._created, self._object):
            self._presume(ends)
        return self._out(event, obj, changed=changed)

    def _presume(self, ends: tuple[bytes, bytes, bytes]) -> None:
        """After the role frame, whose id, created and object are the stream's: the
        template presumed from it (steady.py), completed by the first content frame."""
        model = self._model
        assert model is not None  # steady
        self._template = SteadyFrameTemplate.presumed(ends, model)

    def _note_block(self, choices: list[Any]) -> bool:
        """Whether a dropped annotation choice's verdict blocks the text; noted if so."""
        verdict = blocking_verdict(choices)
        if verdict is None:
            return False
        self._blocked = True
        if not self._filter_result:
            self._filter_result = verdict
        return True

    def _note_finish(self, choices: list[dict[str, Any]]) -> None:
        for choice in choices:
            reason = choice.get("finish_reason")
            if type(reason) is str:
                index = choice.get("index")
                self.finish_reasons[index if type(index) is int else 0] = reason
                if reason == "content_filter":
                    self._filter_result = choice.get("content_filter_results")

    def _restore(self, obj: dict[str, Any]) -> bool:
        """Adopt the first real id/created/model/object; write them into `obj`."""
        if self._id is None and type(obj.get("id")) is str and obj["id"]:
            self._id = obj["id"]
            if self.claim is not None:  # once a stream
                self.claim([obj["id"]])
        created = obj.get("created")
        if self._created is None and type(created) is int and created:
            self._created = created
        if self._model is None and type(obj.get("model")) is str and obj["model"]:
            self._model = obj["model"]
        if self._object is None and type(obj.get("object")) is str and obj["object"]:
            self._object = obj["object"]
        want_id, want_created, want_model, want_object = (
            self._id, self._created, self._model, self._object)
        self._steady = not self._carried and None not in (
            want_id, want_created, want_model, want_object)
        # Each field in turn, unrolled: a loop over (key, value) pairs cost ~60 bytecodes.
        changed = False
        if want_id is not None and obj.get("id") != want_id:
            obj["id"] = want_id
            changed = True
        if want_created is not None and obj.get("created") != want_created:
            obj["created"] = want_created
            changed = True
        if want_model is not None and obj.get("model") != want_model:
            obj["model"] = want_model
            changed = True
        if want_object is not None and obj.get("object") != want_object:
            obj["object"] = want_object
            changed = True
        return changed

    def _out(self, event: SseEvent, obj: dict[str, Any], *, changed: bool) -> bytes:
        self._frames_out += 1
        if not changed:
            raw, data = event.raw, event.data
            assert data is not None
            if len(raw) == len(data) + 8 and raw[:6] == b"data: " and raw[-2:] == b"\n\n":
                return raw
            if b"\n" not in data and b"\r" not in data:
                return _sse(data)
        return _sse(orjson.dumps(obj))

    def _close(self, *, cut: bool, reason: str | None) -> bytes:
        self.done = True
        out = b""
        if not self._error_sent:
            blocked = self._blocked or "content_filter" in self.finish_reasons.values()
            error = closing_error(self._policy, self._filter_result, blocked, cut, reason)
            if error is not None:
                self._frames_out += 1
                out = _sse(orjson.dumps(error))
        self._frames_out += 1
        return out + DONE
