"""The Responses API stream's meter: Responses streams are relayed unchanged (no
normalizer), and this reads, as they pass, what the gateway must know of them: the usage,
the characters of generated text (for an estimate when the stream ends first) and the
ids the stream creates (so that they become the caller's key's own). An Assistants run's
stream (`stream: true`) is read by it too: its events' `data` is the object itself (the
run's: its id first, its usage at `thread.run.completed`; a message delta's text; the
thread a `threads/runs` made, named by its run, claimed after the run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from azure_openai_proxy.governance.estimate import text_length
from azure_openai_proxy.governance.toolusage import image_gen_usage
from azure_openai_proxy.sse import MAX_RELAYED_EVENT_BYTES, SseDecoder

__all__ = ["ResponsesStreamMeter"]

# Responses API stream events whose `delta` is generated text (billed as output tokens).
# The events that name an output item (`item.id`), and those that end a response
# (`response.output` lists its items).
_ITEM_EVENTS = frozenset({"response.output_item.added", "response.output_item.done"})
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_PARTIAL_IMAGE = b'"response.image_generation_call.partial_image"'
_MAX_ID = 256  # longer is no id Azure made (as relay.py's `_id_of`)
_MAX_IDS = 10_000  # per stream: what one response may create, and more
_COUNTED_DELTAS = frozenset({
    "response.output_text.delta", "response.refusal.delta",
    "response.function_call_arguments.delta", "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta", "response.audio_transcript.delta",
    "response.custom_tool_call_input.delta", "response.mcp_call_arguments.delta",
    "response.code_interpreter_call_code.delta",
})


class ResponsesStreamMeter:
    """Reads a Responses API stream as it is relayed unchanged: `usage` from its
    `response.completed` (or `.incomplete`/`.failed`) event, `content_chars` of the
    text deltas (output text, refusal, reasoning, function-call arguments), for an
    estimate when it ends first, the hosted image tool's part (`image_gen`: the final
    response's `tool_usage.image_gen`, or its `image_generation_call` items), and the
    ids the stream creates: the response's (from
    `response.created`, or from the final event when none came first; kept in
    `response_id`) and its output items' (from `response.output_item.added`/`.done` and
    the final response's `output`). Each new id is handed to `claim` (when set) as soon
    as the event naming it is fed, before the caller relays that event; the response's
    id to `created` too (when set: the resource that made it is remembered,
    gateway/affinity.py). Only the events that can carry one of these are parsed."""

    __slots__ = ("_decoder", "_partials", "_pictures", "_seen", "_tail", "after", "claim",
                 "content_chars", "created", "image_gen", "response_id", "thread_made",
                 "usage")

    def __init__(self, claim: Callable[[list[str]], None] | None = None,
                 created: Callable[[str], None] | None = None,
                 event_limit: int = MAX_RELAYED_EVENT_BYTES, thread_made: bool = False) -> None:
        self._decoder = SseDecoder(event_limit, MAX_RELAYED_EVENT_BYTES)
        # A run's stream that made its thread (`threads/runs`): its `thread_id` claimed too
        self.thread_made = thread_made
        self.claim = claim
        self.created = created
        self._seen: set[str] = set()
        self.usage: dict[str, Any] | None = None
        # The hosted image tool's part (governance/toolusage.py), from the final event
        self.image_gen: dict[str, Any] | None = None
        # The pictures finished so far (their items), for a stream that ends first
        self._pictures: list[dict[str, Any]] = []
        self._partials = 0  # the tool's partial images streamed (each billed)
        self.content_chars = 0
        # By their `sequence_number`: the text deltas up to `after` are not counted (a
        # resumed stream's replay of what an earlier stream counted); `_tail`, the last
        # one counted (its number is read once, at the end: `last`)
        self.after = -1
        self._tail: dict[str, Any] | None = None
        self.response_id: str | None = None

    @property
    def last(self) -> int:
        """The `sequence_number` of the last text delta counted (-1: none, or it had
        none)."""
        number = None if self._tail is None else self._tail.get("sequence_number")
        return number if type(number) is int else -1

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            data = event.data
            # find(), not `in`: see sse.py
            if data is None:
                continue
            if data.find(b'"usage"') == -1:
                if data.find(b'.delta"') != -1:
                    if data.find(b'.audio.delta"') != -1:
                        continue  # audio deltas are base64 sound, not text: not parsed
                elif data.find(b'output_item.') == -1 and data.find(b'response.created') == -1:
                    # names no id the stream creates; a partial image is counted, not
                    # parsed (its base64 picture). Quoted: in a text's JSON the quotes
                    # would be escaped, so no text the model writes can match it
                    if data.find(_PARTIAL_IMAGE) != -1:
                        self._partials += 1
                    continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if type(obj) is not dict:
                continue
            delta = obj.get("delta")
            kind = obj.get("type")
            if type(delta) is str and kind in _COUNTED_DELTAS:
                if self.after >= 0 and _replayed(obj, self.after):
                    continue  # relayed and counted before (a resumed stream's replay)
                self._tail = obj  # (not its number: ~500 instructions fewer a delta)
                # as a prompt is counted: UTF-8 bytes outside ASCII (`text_length`)
                self.content_chars += len(delta) if delta.isascii() else text_length(delta)
                continue
            if kind in _ITEM_EVENTS:
                item = obj.get("item")
                self._ids_of([item])
                if (kind == "response.output_item.done" and type(item) is dict
                        and item.get("type") == "image_generation_call"
                        and len(self._pictures) < _MAX_IDS):
                    # its quality and size only: not its picture (`result`, base64)
                    self._pictures.append({"type": "image_generation_call",
                                           "quality": item.get("quality"),
                                           "size": item.get("size")})
                continue
            response = obj.get("response")
            if type(response) is not dict:
                self._assistants(obj)
                continue
            usage = response.get("usage")
            if type(usage) is dict:
                self.usage = usage
            if kind == "response.created":
                self._response_created(response)
            elif kind in _FINAL_EVENTS:
                # A stream that did not begin with `response.created` (cut, or not as
                # documented) still names its response here, before its items.
                self._response_created(response)
                self.image_gen = image_gen_usage(response, None, self._partials)
                self._pictures.clear()  # the final event says what they cost
                output = response.get("output")
                if type(output) is list:
                    self._ids_of(output)

    def pictures_so_far(self) -> dict[str, Any] | None:
        """The image tool's part of a stream that ended before its final event: the
        pictures whose items were done and the partial images sent, estimated
        (`image_gen_usage`: Azure bills both); None if none."""
        if not self._pictures and not self._partials:
            return None
        return image_gen_usage({"output": self._pictures}, None, self._partials)

    def _assistants(self, obj: dict[str, Any]) -> None:
        """An Assistants run stream's event (`data`: a run, a step, a message or a
        delta): a run's id (the first, the run's own) and usage; a delta's text."""
        kind = obj.get("object")
        if kind == "thread.run":
            usage = obj.get("usage")
            if type(usage) is dict:
                self.usage = usage
            self._response_created(obj)
            if self.thread_made and self.response_id is not None:
                self._thread_made(obj.get("thread_id"))
        elif kind == "thread.message.delta":
            delta = obj.get("delta")
            parts = delta.get("content") if type(delta) is dict else None
            for part in parts if type(parts) is list else ():
                text = part.get("text") if type(part) is dict else None
                value = text.get("value") if type(text) is dict else None
                if type(value) is str:
                    self.content_chars += len(value) if value.isascii() else text_length(value)

    def _thread_made(self, made: Any) -> None:
        """The thread a `threads/runs` made, named by its run: after the run (the
        record's `created_id` is the run's), the key's (`claim`) and its home's
        (`created`), so a request naming it goes where it was made."""
        if type(made) is str and made not in self._seen:
            self._ids_of([{"id": made}])
            if made in self._seen and self.created is not None:
                self.created(made)

    def _response_created(self, response: dict[str, Any]) -> None:
        response_id = response.get("id")
        if (self.response_id is None and type(response_id) is str
                and 0 < len(response_id) <= _MAX_ID):
            self.response_id = response_id
            self._seen.add(response_id)
            if self.created is not None:
                self.created(response_id)
            if self.claim is not None:
                self.claim([response_id])

    def _ids_of(self, items: list[Any]) -> None:
        fresh: list[str] = []
        for item in items:
            item_id = item.get("id") if type(item) is dict else None
            if (type(item_id) is str and 0 < len(item_id) <= _MAX_ID
                    and item_id not in self._seen and len(self._seen) < _MAX_IDS):
                self._seen.add(item_id)
                fresh.append(item_id)
        if fresh and self.claim is not None:
            self.claim(fresh)


def _replayed(event: dict[str, Any], after: int) -> bool:
    """Whether a text delta's `sequence_number` is at most `after` (one without is not)."""
    number = event.get("sequence_number")
    return type(number) is int and number <= after
