"""A bound on one server-sent event's size, for the decoders of relayed streams.

`SseDecoder` keeps an unfinished event's bytes until its blank line comes, however long
that takes: an upstream sending one endless line (a broken proxy, a runaway base64
field) grew the gateway's memory for as long as it sent, and at the stream's end the
event was parsed whole (a 64 MiB line peaked near 900 MiB under tracemalloc).
`BoundedSseDecoder` refuses an event past `limit` bytes instead: the buffered bytes are
dropped, never parsed, and `UpstreamAnswerTooLarge` ends the stream (the relay turns
it into the client's error event, as for any upstream failure).
"""

from __future__ import annotations

from azure_openai_proxy.errors import UpstreamAnswerTooLarge
from azure_openai_proxy.sse import SseDecoder, SseEvent

__all__ = ["MAX_EVENT_BYTES", "MAX_METERED_EVENT_BYTES", "BoundedSseDecoder"]

# A chat or completion stream's event (`ChatStreamNormalizer`): Azure's are deltas of a
# few hundred bytes (audio's, some KiB; a first frame's citations, some hundred). Parsing
# one costs about 14 times its size at its peak (orjson, even to refuse it).
MAX_EVENT_BYTES = 8 * 1024 * 1024
# An event of a stream relayed as it is, read by a meter for its usage: a Responses
# stream's last event repeats the whole answer, its pictures' base64 included.
MAX_METERED_EVENT_BYTES = 64 * 1024 * 1024


class BoundedSseDecoder(SseDecoder):
    """`SseDecoder`, whose `feed` raises `UpstreamAnswerTooLarge` once the event it holds
    unfinished has passed `limit` bytes (the bytes fed that no event's `raw` holds yet:
    their concatenation is the input)."""

    __slots__ = ("_unfinished", "limit")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self._unfinished = 0  # bytes of the unfinished event, at most

    def feed(self, chunk: bytes) -> list[SseEvent]:
        events = super().feed(chunk)
        if self.idle():
            self._unfinished = 0
            return events
        unfinished = self._unfinished + len(chunk)
        for event in events:
            unfinished -= len(event.raw)
        self._unfinished = unfinished
        if unfinished > self.limit:
            SseDecoder.__init__(self)  # dropped unparsed: `flush()` finds nothing
            self._unfinished = 0
            raise UpstreamAnswerTooLarge(
                f"An event of Azure OpenAI's stream is larger than the gateway's limit of "
                f"{self.limit} bytes.")
        return events
