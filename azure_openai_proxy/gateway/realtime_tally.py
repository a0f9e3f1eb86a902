"""What Azure has sent of each Realtime response in progress (`ResponseTally`), for a
response cut before its `response.done` (the client left, Azure's socket dropped, the
key or a shutdown ended the session): its usage is then estimated, as an HTTP stream
cut short is. Plain data: messages in, usage out (`realtime.py` feeds it).

Azure runs one response at a time in the session's conversation, and out-of-band ones
(`response.create` with `conversation: "none"`) beside it: each is tallied by its
`response_id`, so that each cut one is its own estimate and a `response.done` ends the
tally of its own response only."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.gateway.realtime_wire import event_of
from azure_openai_proxy.governance.estimate import text_length, tokens_for_chars

__all__ = ["ResponseTally"]

# A cut response's output, estimated from its deltas as relayed: a text (or transcript,
# or arguments) delta is about one token; audio is PCM16 at 24 kHz in base64 (64,000
# characters a second), about 10 tokens a second as the emulator bills it. Its input
# adds what the client sent before it started: audio so, the rest about a token per 4
# characters, outside ASCII per 4 UTF-8 bytes (`governance.estimate.text_length`, as an
# HTTP prompt is counted: 1,500 Chinese characters are ~1,100 tokens, not 375).
_AUDIO_CHARS_PER_SECOND = 64_000
_AUDIO_TOKENS_PER_SECOND = 10
_TYPE_SPAN = 160  # how far into an event its type is looked for (Azure writes it first)
_AUDIO_APPEND = "input_audio_buffer.append"
_RESPONSE_ID = '"response_id"'
# Responses tallied at once: Azure runs few (one in the conversation, a few out of band
# beside it). One started past them is not tallied: cut, it is not recorded (done, it
# is, with Azure's usage).
MOST_RESPONSES = 16


class _Tallied:
    """One response in progress: its deltas, and the client's input before it."""

    __slots__ = ("audio_chars", "deltas", "sent_audio", "sent_text")

    def __init__(self, sent_text: int, sent_audio: int) -> None:
        self.deltas = self.audio_chars = 0
        self.sent_text, self.sent_audio = sent_text, sent_audio


class ResponseTally:
    """The responses in progress, by `response_id`. Fed each message Azure sends that is
    not a `response.done` (`feed`); a `response.done` ends its own response's tally
    (`finished`). Outside a response one substring test a message; inside, one or two
    bounded ones (and, with several responses in progress, a delta's `response_id` found
    by a substring search). Each client message passed on (`sent`) is one bounded
    substring test: input of the next response to start."""

    __slots__ = ("_last", "_responses", "_sent_audio", "_sent_text")

    def __init__(self) -> None:
        self._responses: dict[str, _Tallied] = {}
        self._last: _Tallied | None = None  # the one started last
        self._sent_text = self._sent_audio = 0  # characters the client sent since one started

    @property
    def started(self) -> bool:
        """Whether a response is in progress."""
        return bool(self._responses)

    def sent(self, message: str | bytes) -> None:
        """A client message passed on to Azure: input of the response to come."""
        if isinstance(message, str) and message.find(_AUDIO_APPEND, 0, _TYPE_SPAN) >= 0:
            self._sent_audio += len(message)
        else:  # a binary frame's bytes are its length already
            self._sent_text += len(message) if isinstance(message, bytes) else text_length(message)

    def feed(self, message: str | bytes) -> None:
        responses = self._responses
        if not responses:
            self._created(message)
            return
        if not isinstance(message, str):
            return
        if message.find(".delta", 0, _TYPE_SPAN) < 0:
            if message.find("response.created", 0, _TYPE_SPAN) >= 0:
                self._created(message)
            return
        tallied = self._last if len(responses) == 1 else self._of(message)
        if tallied is None:
            return
        if message.find("audio.delta", 0, _TYPE_SPAN) >= 0:
            tallied.audio_chars += len(message)
        else:
            tallied.deltas += 1

    def finished(self, response_id: str | None) -> None:
        """A `response.done` (Azure counted its response): its tally ends. Without an id,
        the oldest response's does."""
        responses = self._responses
        if response_id is None:
            response_id = next(iter(responses), None)
        ended = responses.pop(response_id, None) if response_id is not None else None
        if ended is not None and ended is self._last:
            self._last = next(reversed(responses.values()), None)

    def usages(self, context_tokens: int) -> list[dict[str, Any]]:
        """Each cut response's usage, flagged estimated (none in progress: none): its
        input the conversation the last response ended with (`context_tokens`) and what
        the client sent before it, its output what its deltas relayed."""
        return [_usage(tallied, context_tokens) for tallied in self._responses.values()]

    def _created(self, message: str | bytes) -> None:
        event = event_of(message, "response.created")
        if event is None or len(self._responses) >= MOST_RESPONSES:
            return
        response = event.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        tallied = _Tallied(self._sent_text, self._sent_audio)
        self._sent_text = self._sent_audio = 0
        self._responses[response_id if isinstance(response_id, str) else ""] = tallied
        self._last = tallied

    def _of(self, message: str) -> _Tallied | None:
        """The response a delta is of, by its `response_id` (the one started last when
        it names none the tally knows)."""
        at = message.find(_RESPONSE_ID)
        if at >= 0:
            start = message.find('"', at + len(_RESPONSE_ID)) + 1
            end = message.find('"', start)
            if start > 0 and end > 0:
                found = self._responses.get(message[start:end])
                if found is not None:
                    return found
        return self._last


def _usage(tallied: _Tallied, context_tokens: int) -> dict[str, Any]:
    audio = _audio_tokens(tallied.audio_chars)
    output = tallied.deltas + audio
    text_in = context_tokens + tokens_for_chars(tallied.sent_text)
    audio_in = _audio_tokens(tallied.sent_audio)
    return {
        "total_tokens": text_in + audio_in + output, "input_tokens": text_in + audio_in,
        "output_tokens": output,
        "input_token_details": {"cached_tokens": 0, "text_tokens": text_in,
                                "audio_tokens": audio_in},
        "output_token_details": {"text_tokens": tallied.deltas, "audio_tokens": audio},
        "estimated": True,
    }


def _audio_tokens(chars: int) -> int:
    """The tokens of `chars` characters of base64 PCM16 at 24 kHz, rounded up."""
    return -(-chars * _AUDIO_TOKENS_PER_SECOND // _AUDIO_CHARS_PER_SECOND)
