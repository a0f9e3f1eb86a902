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
  showed Azure's usage: counted then (`streamed`), dropped from every read;
- its stream resumed (`GET responses/{id}?stream=true`, after a client left it) is a
  read too (`restreamed`): Azure's usage at its end counts the response if nothing had;
- a background response whose stream ended before Azure's usage (cut, or its client
  left) was counted by its `POST`'s record at an estimate (the prompt, what was
  relayed): Azure's usage at the first read (or resumed stream's end) counts only what
  that estimate did not (`_less`: each count less the estimate's, none below 0), so the
  prompt is not counted twice. A resumed stream cut again adds its estimate to it.
  What is kept is the estimate as the record held it when `answered` ran, before its
  handler ended and the metrics and the access log counted it: were it written after
  (a relay's task that ends after its handler), the ledger's later look may count
  more, never less; and three numbers per id, not the records.

`answered` is the one entry, after a request's answer: a virtual key's
(gateway/ownership.py `owned_answer`, and when its client left) and a static client
key's (`CountedSend`, `Gateway.handle`'s send of a resource request): a read
counts nothing more whichever key made it.

Remembered per worker, in a bounded table (16,384 ids), and, with governance on (a
database), in the database's `counted_usage` table too (store/ownership.py), so that
every worker and the gateway after a restart count each id once: what a count or an
estimate adds is written in the background (no await on the answer's path); a read
this worker's table does not know as counted looks it up first (`recall`: one query,
at a read that shows a background response's or a run's usage only). What that
leaves, exactly:

- a foreground response's read and a stored chat completion's read or update count
  nothing on any worker, at any time: told from the answer itself (its `background`,
  its route), never from the table;
- without a database, a background response's (or an Assistants run's) read, cancel
  or resumed stream answered by a worker whose table does not hold its id (another
  worker under `--workers N`, the gateway since restarted, or 16,384 newer ids since)
  counts Azure's whole usage once more on that worker, and an estimate of its cut
  stream made on another worker is not taken off: over- rather than under-counted;
- with one, two reads of it answered at the same moment by two workers (each looks
  before the other's count is written), or while the database fails or is slow to
  answer (past `_RECALL_WAIT`: memory alone answers, as above), can each count it;
- a resumed stream replays the events after its `starting_after` (all of them
  without one, as the SDK's `retrieve(stream=True)` asks): where an earlier stream of
  the response, cut or left, counted some of them in its estimate, the resumed one's
  estimate counts only the text deltas past the last one counted (`replayed`, by
  their `sequence_number`: the meter skips the rest), so output relayed twice is
  estimated once. Resumed on another worker than the earlier stream's: twice (its
  meter is set before the database is read, which only a read showing usage does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import orjson

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, Target
from azure_openai_proxy.store.ownership import Counted, OwnerStore

__all__ = ["CountedSend", "CountedUsage"]

Send = Callable[[HttpRequest, Target, Caller, RequestBody, RequestRecord,
                 tuple[Pool, str | None]], Awaitable[Reply]]

_CAPACITY = 16_384  # object ids (about 40 bytes each)
# The longest a read waits for the database's note of its object (`recall`): one indexed
# look-up takes a millisecond, but it queues in the object owners' one thread behind
# their writes, each of which a locked database holds up to its busy timeout (5 s).
# Past it, the read is counted as if the database had failed (over- rather than
# under-counted) and the client has its answer.
_RECALL_WAIT = 1.0
# An object's entry: True, counted whole; or the (prompt, completion) tokens that the
# estimates of a cut stream's POST and of resumed streams cut again counted of it, and
# the sequence number of the last text delta they counted.
_Counted = bool | tuple[int, int, int]
# `ObjectOwners._call`: work on the governance database's store, in its thread (None when
# it fails).
Store = Callable[[Callable[[OwnerStore], Any]], Coroutine[Any, Any, Any]]


class CountedUsage:
    """The ids of background responses and runs whose usage a read has counted."""

    def __init__(self, capacity: int = _CAPACITY, store: Store | None = None,
                 writes: set[asyncio.Task[None]] | None = None) -> None:
        self._counted: BoundedCache[str, _Counted] = BoundedCache(capacity)
        self._store = store
        # `_note`'s, until written (`ObjectOwners.written` waits for them at a stop)
        self._writes: set[asyncio.Task[None]] = set() if writes is None else writes

    async def recall(self, method: str, operation: str, record: RequestRecord,
                     answer: bytes | None) -> None:
        """Before `answered` counts a read (`answer`: a JSON one's bytes, else None) of
        a background response or a run that shows its usage: what the database notes
        of it (another worker's counts, or this gateway's before a restart), unless this
        worker counted it whole. Its estimates as the larger of each number here and
        there (this worker's last may not be written yet). A foreground response's read,
        one without usage (still running), and a resumed stream's estimate (relayed
        already: a read right after it must find it counted) ask nothing. Waits at most
        `_RECALL_WAIT` for the database (then counts as without it)."""
        if self._store is None or (usage := record.usage) is None or (
                answer is None and usage.get("estimated")):
            # (An estimate only adds to what is noted, here and there.)
            return
        object_id = _read_object(method, operation)
        if object_id is None or self._counted.get(object_id) is True or (
                answer is not None and operation.startswith("responses")
                and not _background(answer)):
            return
        try:
            noted: Counted | None = await asyncio.wait_for(
                self._store(lambda store: store.counted(object_id)), _RECALL_WAIT)
        except TimeoutError:
            return  # a slow database: counted on this worker's memory alone
        if noted is None:
            return
        here = self._counted.get(object_id)
        if noted[0] or here is True:
            self._counted.put(object_id, True)
            return
        spent = here or (0, 0, -1)
        self._counted.put(object_id, (max(spent[0], noted[1]), max(spent[1], noted[2]),
                                      max(spent[2], noted[3])))

    def _note(self, object_id: str, counted: Counted) -> None:
        """What was just counted of `object_id`, added in the database in the
        background (`OwnerStore.add_counted`)."""
        if self._store is None:
            return
        now, store = time.time(), self._store

        async def add() -> None:
            await store(lambda shared: shared.add_counted(object_id, counted, now))

        write = asyncio.get_running_loop().create_task(add())
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    def answered(self, method: str, operation: str, record: RequestRecord,
                 answer: bytes | None, body: Mapping[str, Any] | None) -> None:
        """After the answer (`answer`: a JSON one's bytes, else None) to a request for
        `operation` (its JSON `body`): a read's usage counted once (`reread`,
        `restreamed`), a background response's stream noted (`streamed`)."""
        if method == "POST" and operation == "responses":
            self.streamed(record, body)
        elif (method == "GET" or operation.endswith("/cancel") or operation.startswith("chat/")
              ) and record.usage is not None:
            if answer is not None:
                self.reread(operation, record, answer)
            elif record.stream:
                self.restreamed(operation, record)

    def streamed(self, record: RequestRecord, body: Mapping[str, Any] | None) -> None:
        """A `POST responses` ended (to its end, cut, or its client gone): a background
        one's stream counted it with Azure's usage, or at an estimate (a read counts the
        rest). Not a foreground one's: a read counts nothing of it, and its id would
        push counted background ones out of the bounded table."""
        response_id = record.created_id
        if (response_id is None or not record.stream or body is None
                or body.get("background") is not True):
            return
        usage = record.usage
        if usage and not usage.get("estimated"):
            self._counted.put(response_id, True)
            self._note(response_id, (True, 0, 0, -1))
        else:
            spent = _spent(record, (0, 0, -1))
            self._counted.put(response_id, spent)
            self._note(response_id, (False, *spent))

    def replayed(self, method: str, operation: str) -> int:
        """Before a request is sent: for a resumed Responses stream (`GET
        responses/{id}`, relayed only if `stream=true`), the sequence number of the last
        text delta an estimate of its response counted (its meter counts none up to it:
        `RequestRecord.sequence`); else -1."""
        kind, _, response_id = operation.partition("/")
        if method != "GET" or kind != "responses" or not response_id or "/" in response_id:
            return -1
        earlier = self._counted.get(response_id)
        return earlier[2] if type(earlier) is tuple else -1

    def restreamed(self, operation: str, record: RequestRecord) -> None:
        """Drop `record`'s usage when the resumed stream it records (`operation`:
        responses/{id}; only a background response's can be) is of a response counted
        already; else Azure's usage it showed counts it, less what estimates counted
        (an estimate, of a stream left again, adds to those: a later read still counts
        Azure's)."""
        kind, _, response_id = operation.partition("/")
        if kind != "responses" or not response_id or "/" in response_id:
            return
        earlier, usage = self._counted.get(response_id), record.usage
        if earlier is True:
            record.usage = None  # counted already
        elif usage is not None and usage.get("estimated"):
            self._counted.put(response_id, _spent(record, earlier or (0, 0, -1)))
            self._note(response_id, (False, *_spent(record, (0, 0, -1))))
        else:
            self._count(response_id, record)

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
        self._count(parts[-1], record)

    def _count(self, object_id: str, record: RequestRecord) -> None:
        """`record`'s usage (Azure's, of `object_id`'s whole generation) counts it: none
        when counted already, less the estimates that counted part of it."""
        earlier = self._counted.get(object_id)
        if earlier is True:
            record.usage = None  # counted by an earlier read, or the stream
            return
        if earlier and record.usage is not None:
            record.usage = _less(record.usage, earlier)
        self._counted.put(object_id, True)
        self._note(object_id, (True, 0, 0, -1))


class CountedSend:
    """`UpstreamAttempts.send` of a static client key's (or passthrough) resource
    request, its usage counted once as a virtual key's is (`owned_answer` calls
    `answered` for those). Made per request, for a resource's only: the chat path calls
    `UpstreamAttempts.send` as it did."""

    __slots__ = ("_counted", "_send")

    def __init__(self, send: Send, counted: CountedUsage) -> None:
        self._send, self._counted = send, counted

    async def send(self, request: HttpRequest, target: Target, caller: Caller,
                   body: RequestBody, record: RequestRecord,
                   routed: tuple[Pool, str | None]) -> Reply:
        """A Responses stream's id read as it passes, as a virtual key's claim reads it
        (`record.created_id`), a resumed one's replay not counted again (`replayed`);
        `answered` after the answer, or when it raised (its client
        left a background stream: its estimate is read at the count)."""
        method, operation, counted = request.method, target.operation, self._counted
        record.sequence = counted.replayed(method, operation)
        claimed = method == "POST" and operation == "responses" and record.claim is None
        if claimed:
            record.claim = lambda ids: _created(record, ids)
        try:
            reply = await self._send(request, target, caller, body, record, routed)
        except BaseException:
            counted.answered(method, operation, record, None, body.json)
            raise
        finally:
            if claimed:  # (the stream's meter has its own reference): no cycle through it
                record.claim = None
        answer = reply.body if isinstance(reply, Answer) else None
        try:
            await counted.recall(method, operation, record, answer)  # (another worker's...)
        finally:  # counted even if its client left meanwhile (as a virtual key's is)
            counted.answered(method, operation, record, answer, body.json)
        return reply


def _read_object(method: str, operation: str) -> str | None:
    """The background response or run a read of it names (`GET responses/{id}`, its
    stream resumed; `GET threads/{t}/runs/{r}`; either's `POST .../cancel`), or None."""
    parts = operation.split("/")
    if method == "POST" and parts[-1] == "cancel":
        parts.pop()
    elif method != "GET":
        return None
    if (len(parts) == 2 and parts[0] == "responses") or (
            len(parts) == 4 and parts[0] == "threads" and parts[2] == "runs"):
        return parts[-1] or None
    return None


def _background(answer: bytes) -> bool:
    """Whether a JSON answer is of a background response."""
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return False
    return type(parsed) is dict and parsed.get("background") is True


def _created(record: RequestRecord, ids: list[str]) -> None:
    """A Responses stream's ids as they pass: the first, the response's own."""
    if record.created_id is None and ids:
        record.created_id = ids[0]


# A usage's counts, each with its details (a part of it: cached, reasoning, audio...).
_COUNTS = (("prompt_tokens", "prompt_tokens_details"), ("input_tokens", "input_tokens_details"),
           ("completion_tokens", "completion_tokens_details"),
           ("output_tokens", "output_tokens_details"))


def _spent(record: RequestRecord, earlier: tuple[int, int, int]) -> tuple[int, int, int]:
    """`earlier` (prompt, completion) tokens counted, and `record`'s estimate's now; the
    last text delta either counted (`record.sequence`, its meter's)."""
    prompt, completion = record.tokens()
    return (earlier[0] + (prompt or 0), earlier[1] + (completion or 0),
            max(earlier[2], record.sequence))


def _less(usage: dict[str, Any], spent: tuple[int, int, int]) -> dict[str, Any]:
    """`usage` less what estimates counted (`spent`: prompt, completion tokens): its
    prompt (input) count less theirs, its completion (output) count less theirs, none
    below 0; a detail (a part of a count: cached tokens, reasoning, audio) at most its
    count. The prompt an estimate put over Azure's is not given back: over- rather than
    under-counted."""
    left, total = dict(usage), 0
    for n, (name, details) in enumerate(_COUNTS):
        count = left.get(name)
        if type(count) is not int:
            continue
        left[name] = count = max(0, count - spent[n // 2])
        total += count
        parts = left.get(details)
        if type(parts) is dict:
            left[details] = {k: min(v, count) if type(v) is int else v
                             for k, v in parts.items()}
    if type(left.get("total_tokens")) is int:
        left["total_tokens"] = total
    return left
