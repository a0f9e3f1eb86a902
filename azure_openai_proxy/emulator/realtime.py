"""The Realtime API's conversation, as the emulator plays it. Pure: client events in,
server events out (`realtime_ws.py` moves them over the WebSocket and paces them).

    session = RealtimeSession(family, model, completion_tokens, new_id)
    session.opened()                     -> [session.created]
    session.receive(text)                -> [(server event, tokens)...]  (errors as `error`)

Two families name their events differently (wire reference, section 8): the dated
preview API (`/openai/realtime?api-version=...`) says `response.text.delta` and
`response.audio.delta`; the v1 API (`/openai/v1/realtime`, GA) says
`response.output_text.delta` and `response.output_audio.delta`. Audio is a generated
PCM16 tone at 24 kHz, base64 in deltas of 100 ms.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import orjson

from azure_openai_proxy.emulator.media import SAMPLE_RATE, pcm16, tone_samples
from azure_openai_proxy.emulator.textgen import count_tokens, generate_tokens

__all__ = ["Family", "RealtimeSession", "ResponseEvents"]

Family = Literal["preview", "ga"]

_CLIENT_EVENTS = (
    "session.update", "conversation.item.create", "conversation.item.delete",
    "conversation.item.truncate", "conversation.item.retrieve", "response.create",
    "response.cancel", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)
_MODALITIES = frozenset({"text", "audio"})
_AUDIO_DELTA_SECONDS = 0.1
# Audio tokens per second of audio, as OpenAI bills realtime audio (about 10 per second).
_AUDIO_TOKENS_PER_SECOND = 10


class RealtimeSession:
    """One WebSocket's conversation: its session settings and its items."""

    def __init__(self, family: Family, model: str, completion_tokens: int,
                 new_id: Callable[[str], str]) -> None:
        self.family = family
        self._new_id = new_id
        self._completion_tokens = completion_tokens
        self._items: list[dict[str, Any]] = []
        self._audio_bytes = 0  # appended to the input buffer since the last commit
        # The responses in progress (from their `response.create`, while their first token
        # is awaited too), each with whether it is out of band; a `response.cancel` puts
        # one in `_cancelled`, and it ends at its next event with a `cancelled`
        # `response.done` (its usage so far).
        self._running: dict[str, bool] = {}
        self._cancelled: set[str] = set()
        self._session: dict[str, Any] = {
            "id": new_id("sess_"), "object": "realtime.session", "model": model,
            "instructions": "", "voice": "alloy", "temperature": 0.8,
            "tools": [], "tool_choice": "auto",
        }
        if family == "ga":
            self._session.update({"type": "realtime", "output_modalities": ["audio"],
                                  "max_output_tokens": "inf"})
        else:
            self._session.update({"modalities": ["text", "audio"],
                                  "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                                  "max_response_output_tokens": "inf"})

    # -- events ------------------------------------------------------------------------

    def opened(self) -> list[dict[str, Any]]:
        return [self._event("session.created", session=dict(self._session))]

    def receive(self, message: str | bytes) -> Iterable[tuple[dict[str, Any], int]]:
        """The server's answer to one client message: its events, in order, each with
        the generated tokens it carries (for pacing)."""
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [(self.error("invalid_json", "The event is not valid JSON."), 0)]
        if not isinstance(event, dict):
            return [(self.error("invalid_json", "The event must be a JSON object."), 0)]
        kind = event.get("type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if not isinstance(kind, str) or kind not in _CLIENT_EVENTS:
            shown = kind if isinstance(kind, str) else orjson.dumps(kind).decode()
            return [(self.error(
                "invalid_value",
                f"Invalid value: '{shown[:100]}'. Supported values are: "
                + ", ".join(f"'{name}'" for name in _CLIENT_EVENTS) + ".",
                param="type", event_id=event_id), 0)]
        try:
            if kind == "response.create":
                body = event.get("response")
                if body is not None and not isinstance(body, dict):
                    raise _BadEvent("'response' must be an object.", "response")
                active = None if (body or {}).get("conversation") == "none" else next(
                    (r for r, beside in self._running.items() if not beside), None)
                if active is not None:  # (Azure refuses it; out of band runs beside)
                    return [(self.error(
                        "conversation_already_has_active_response",
                        f"Conversation already has an active response in progress: "
                        f"{active}. Wait until the response is finished before creating "
                        "a new one.", event_id=event_id), 0)]
                return self.response(body)
            return [(answer, 0) for answer in self._handle(kind, event)]
        except _BadEvent as exc:
            return [(self.error("invalid_value", str(exc), param=exc.param,
                                event_id=event_id), 0)]

    def response(self, request: dict[str, Any] | None = None) -> ResponseEvents:
        """A response's events with the tokens each one carries (for pacing), ending in
        `response.done` with the usage. Its settings are checked at once (`_BadEvent`).
        One with `conversation: "none"` is out of band (`ResponseEvents.beside`): it runs
        beside the conversation's, and adds nothing to the conversation."""
        request = request or {}
        modalities = self._modalities(request)
        beside = request.get("conversation") == "none"
        # In progress from now, while its first token is awaited too: a cancel then ends
        # it before its first delta (a `cancelled` `response.done`, as Azure's).
        response_id = self._new_id("resp_")
        self._running[response_id] = beside
        return ResponseEvents(self._respond(request, modalities, response_id, beside), beside)

    def _respond(self, request: dict[str, Any], modalities: list[str], response_id: str,
                 beside: bool) -> Iterator[tuple[dict[str, Any], int]]:
        try:
            yield from self._generate(request, modalities, response_id, beside)
        finally:
            self._running.pop(response_id, None)
            self._cancelled.discard(response_id)

    def _generate(self, request: dict[str, Any], modalities: list[str], response_id: str,
                  beside: bool) -> Iterator[tuple[dict[str, Any], int]]:
        cancelled = self._cancelled
        given = request.get("input")  # an out-of-band response's own context
        items = ([i for i in given if isinstance(i, dict)] if isinstance(given, list)
                 else self._items)
        prompt = " ".join(_item_text(item) for item in items)
        instructions = request.get("instructions", self._session.get("instructions", ""))
        input_text = count_tokens(f"{instructions} {prompt}") + 4 * len(items)
        input_audio = self._audio_tokens(self._audio_bytes)
        item_id = self._new_id("item_")
        metadata = request.get("metadata")
        words = generate_tokens(prompt, None, self._most_tokens(request))
        text = "".join(words)
        audio = "audio" in modalities
        part = ({"type": "audio", "transcript": text} if audio
                else {"type": "text", "text": text})
        names = self._names(audio)
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0,
                 "content_index": 0}
        item = {"id": item_id, "object": "realtime.item", "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}
        yield self._event("response.created", response=self._response_body(
            response_id, "in_progress", [], None, modalities, metadata)), 0
        yield self._event("response.output_item.added", response_id=response_id,
                          output_index=0, item=item), 0
        yield self._event("response.content_part.added", **where,
                          part={**part, ("transcript" if audio else "text"): ""}), 0
        sent_words = 0
        for word in words:
            if response_id in cancelled:
                break
            yield self._event(names["delta"], **where, delta=word), 1
            sent_words += 1
        audio_tokens = 0
        if audio and response_id not in cancelled:
            seconds = max(_AUDIO_DELTA_SECONDS, 0.1 * len(words))
            samples = tone_samples(seconds)
            step = int(SAMPLE_RATE * _AUDIO_DELTA_SECONDS)
            for start in range(0, len(samples), step):
                if response_id in cancelled:
                    break
                chunk = pcm16(samples[start:start + step])
                yield self._event(names["audio"], **where,
                                  delta=base64.b64encode(chunk).decode()), 0
                audio_tokens += round(_AUDIO_DELTA_SECONDS * _AUDIO_TOKENS_PER_SECOND)
            else:
                yield self._event(names["audio_done"], **where), 0
                audio_tokens = round(seconds * _AUDIO_TOKENS_PER_SECOND)
        if response_id in cancelled:  # Azure bills what was generated before the cancel
            usage = _usage(input_text, input_audio, sent_words, audio_tokens)
            yield self._event("response.done", response=self._response_body(
                response_id, "cancelled", [], usage, modalities, metadata)), 0
            return
        yield self._event(names["done"], **where,
                          **({"transcript": text} if audio else {"text": text})), 0
        yield self._event("response.content_part.done", **where, part=part), 0
        done_item = {**item, "status": "completed", "content": [part]}
        yield self._event("response.output_item.done", response_id=response_id,
                          output_index=0, item=done_item), 0
        if not beside:
            self._items.append(done_item)
            self._audio_bytes = 0
        # (With audio, its transcript is billed as text tokens.)
        usage = _usage(input_text, input_audio, len(words), audio_tokens)
        yield self._event("response.done", response=self._response_body(
            response_id, "completed", [done_item], usage, modalities, metadata)), 0

    def error(self, code: str, message: str, param: str | None = None,
              event_id: str | None = None) -> dict[str, Any]:
        return self._event("error", error={"type": "invalid_request_error", "code": code,
                                           "message": message, "param": param,
                                           "event_id": event_id})

    # -- the client's events -----------------------------------------------------------

    def _handle(self, kind: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "session.update":
            return [self._update(event.get("session"))]
        if kind == "conversation.item.create":
            return [self._create_item(event.get("item"), event.get("previous_item_id"))]
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if not isinstance(audio, str):
                raise _BadEvent("Missing required parameter: 'audio'.", "audio")
            self._audio_bytes += len(audio) * 3 // 4
            return []
        if kind == "input_audio_buffer.commit":
            return [self._event("input_audio_buffer.committed", previous_item_id=None,
                                item_id=self._new_id("item_"))]
        if kind == "input_audio_buffer.clear":
            self._audio_bytes = 0
            return [self._event("input_audio_buffer.cleared")]
        if kind == "conversation.item.delete":
            deleted = event.get("item_id")
            self._items = [i for i in self._items if i.get("id") != deleted]
            return [self._event("conversation.item.deleted", item_id=deleted)]
        if kind == "response.cancel":
            # The one named, else the conversation's (the response ends at its next event)
            named = event.get("response_id")
            target = (named if isinstance(named, str) else
                      next((r for r, beside in self._running.items() if not beside), None))
            if target not in self._running:  # (done already, or never: Azure says so)
                return [self.error("response_cancel_not_active",
                                   "Cancellation failed: no active response found",
                                   event_id=event.get("event_id"))]
            self._cancelled.add(target)
        return []  # truncate, retrieve

    def _update(self, session: object) -> dict[str, Any]:
        if not isinstance(session, dict):
            raise _BadEvent("Missing required parameter: 'session'.", "session")
        for name in ("modalities", "output_modalities"):
            if name in session:
                _check_modalities(session[name], f"session.{name}")
        self._session.update({k: v for k, v in session.items() if k not in ("id", "object")})
        return self._event("session.updated", session=dict(self._session))

    def _create_item(self, item: object, previous: object) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise _BadEvent("Missing required parameter: 'item'.", "item")
        if item.get("type", "message") not in ("message", "function_call",
                                               "function_call_output"):
            raise _BadEvent(f"Invalid value: '{item.get('type')}'.", "item.type")
        stored = {"id": item.get("id") or self._new_id("item_"), "object": "realtime.item",
                  "status": "completed", **{k: v for k, v in item.items() if k != "id"}}
        last = self._items[-1]["id"] if self._items else None
        self._items.append(stored)
        return self._event("conversation.item.created",
                           previous_item_id=previous if isinstance(previous, str) else last,
                           item=stored)

    # -- helpers -----------------------------------------------------------------------

    def _modalities(self, request: dict[str, Any]) -> list[str]:
        for source in (request, self._session):
            for name in ("output_modalities", "modalities"):
                if name in source:
                    return _check_modalities(source[name], f"response.{name}")
        return ["text"]

    def _most_tokens(self, request: dict[str, Any]) -> int:
        for source in (request, self._session):
            for name in ("max_output_tokens", "max_response_output_tokens"):
                value = source.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return min(value, self._completion_tokens)
        return self._completion_tokens

    def _audio_tokens(self, size: int) -> int:
        return round(size / (2 * SAMPLE_RATE) * _AUDIO_TOKENS_PER_SECOND)

    def _names(self, audio: bool) -> dict[str, str]:
        prefix = "response.output_" if self.family == "ga" else "response."
        if audio:
            return {"delta": prefix + "audio_transcript.delta",
                    "done": prefix + "audio_transcript.done",
                    "audio": prefix + "audio.delta", "audio_done": prefix + "audio.done"}
        return {"delta": prefix + "text.delta", "done": prefix + "text.done"}

    def _response_body(self, response_id: str, status: str, output: list[dict[str, Any]],
                       usage: dict[str, Any] | None, modalities: list[str],
                       metadata: object) -> dict[str, Any]:
        body: dict[str, Any] = {"id": response_id, "object": "realtime.response",
                                "status": status, "status_details": None, "output": output,
                                "usage": usage, "metadata": metadata}
        body["output_modalities" if self.family == "ga" else "modalities"] = modalities
        return body

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self._new_id("event_"), **fields}


class ResponseEvents(Iterator[tuple[dict[str, Any], int]]):
    """A response's events, as `RealtimeSession.receive` answers a `response.create`;
    `beside`: an out-of-band one (`conversation: "none"`), sent beside the others."""

    def __init__(self, events: Iterator[tuple[dict[str, Any], int]], beside: bool) -> None:
        self._events = events
        self.beside = beside

    def __next__(self) -> tuple[dict[str, Any], int]:
        return next(self._events)


class _BadEvent(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _check_modalities(value: object, param: str) -> list[str]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(m, str) and m in _MODALITIES for m in value)):
        raise _BadEvent(f"Invalid modalities: {param} must be a list of 'text' and 'audio'.",
                        param)
    return list(value)


def _usage(input_text: int, input_audio: int, text_out: int, audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": input_text + input_audio + text_out + audio_out,
        "input_tokens": input_text + input_audio, "output_tokens": text_out + audio_out,
        "input_token_details": {"cached_tokens": 0, "text_tokens": input_text,
                                "audio_tokens": input_audio},
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def _item_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if not isinstance(content, list):
        return str(item.get("output", "")) if item.get("type") == "function_call_output" else ""
    parts = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("text", part.get("transcript"))
            if isinstance(text, str):
                parts.append(text)
    return " ".join(parts)
