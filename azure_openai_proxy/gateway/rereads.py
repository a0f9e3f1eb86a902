"""A stored object read back carries the usage of the generation that made it: counted
once, not at every read.

`GET responses/{id}` answers the response with its `usage`, and the relay records any
JSON answer's `usage` as the request's: each read of a stored response was billed to
the key again (its ledger and its budget), though Azure generated it once. So:

- a response made in the foreground (`"background": false`) was counted by the answer
  (or the stream) of the `POST` that made it: a read's usage is dropped;
- a background response's `POST` answers before any usage, and so does a run's
  (`POST threads/{t}/runs`): their usage is counted by the first read that shows it
  (`GET responses/{id}`, `GET threads/{t}/runs/{r}`), and dropped from later reads; a
  cancel is such a read too (`POST responses/{id}/cancel`, `.../runs/{r}/cancel`): it
  answers the object, with its usage when it was done;
- a stored chat completion (`chat/completions/{id}`, read or its metadata updated)
  answers with the usage of the chat that made it, which counted it: dropped;
- unless the background response was streamed (`"stream": true` too) and its stream
  showed Azure's usage: counted then (`counted_by_stream`), dropped from every read;
- its stream resumed (`GET responses/{id}?stream=true`, after a client left it) is a
  read too (`restreamed`): Azure's usage at its end counts the response if nothing had.

Remembered per worker, in a bounded table: a read answered by another worker, or long
after (the table emptied), counts once more; over- rather than under-counted.
"""

from __future__ import annotations

import orjson

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["CountedUsage"]

_CAPACITY = 16_384  # object ids (about 40 bytes each)


class CountedUsage:
    """The ids of background responses and runs whose usage a read has counted."""

    def __init__(self, capacity: int = _CAPACITY) -> None:
        self._counted: BoundedCache[str, bool] = BoundedCache(capacity)

    def counted_by_stream(self, response_id: str) -> None:
        """A background response whose stream counted Azure's usage: no read counts it."""
        self._counted.put(response_id, True)

    def restreamed(self, operation: str, record: RequestRecord) -> None:
        """Drop `record`'s usage when the resumed stream it records (`operation`:
        responses/{id}; only a background response's can be) is of a response counted
        already; else Azure's usage it showed counts it (an estimate, of a stream left
        again, does not: a later read still counts Azure's)."""
        kind, _, response_id = operation.partition("/")
        if kind != "responses" or not response_id or "/" in response_id:
            return
        if self._counted.get(response_id) is not None:
            record.usage = None
        elif record.usage is not None and not record.usage.get("estimated"):
            self._counted.put(response_id, True)

    def reread(self, operation: str, record: RequestRecord, body: bytes) -> None:
        """Drop `record`'s usage when the GET (or cancel) it records read a stored
        object (`operation`, its answer `body`) whose generation was counted already."""
        parts = operation.split("/")
        if parts[0] == "chat":  # a stored chat completion read or updated: counted by
            record.usage = None  # the chat that made it (`store: true`)
            return
        if parts[-1] == "cancel":  # answers the object as a read does
            parts.pop()
        response = len(parts) == 2 and parts[0] == "responses"
        if not (response or (len(parts) == 4 and parts[0] == "threads"
                             and parts[2] == "runs")):
            return
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict):
            return
        if response and answer.get("background") is not True:
            record.usage = None  # counted by the POST that made it
            return
        object_id = parts[-1]
        if self._counted.get(object_id) is not None:
            record.usage = None  # counted by an earlier read
        else:
            self._counted.put(object_id, True)
