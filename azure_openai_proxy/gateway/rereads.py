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
  answers with the usage of the chat that made it, which counted it: dropped; and so
  is an Assistants run step's (`GET threads/{t}/runs/{r}/steps/{s}`): part of its
  run's usage, which a read of the run counts;
- unless the background response was streamed (`"stream": true` too) and its stream
  showed Azure's usage: counted then (`streamed`, claimed as a read's count is: a
  read that claimed it first, on another worker, keeps it), dropped from every read;
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
(gateway/ownership.py `owned_answer`, and `gone` when its client left) and a static
client key's (`CountedSend`, `Gateway.handle`'s send of a resource request): a read
counts nothing more whichever key made it.

Remembered per worker, in a bounded table (16,384 ids), and, with governance on (a
database), in the database's `counted_usage` table too (store/ownership.py), so that
every worker and the gateway after a restart count each id once. A read that counts
Azure's whole usage marks it counted in memory first, before any await (a read on this
worker meanwhile finds it counted), then claims it in the database (`claimed`: one
transaction under the write lock, which also reads what was noted before): noted whole
already (another worker's read, or this gateway's before a restart), its usage is
dropped; else it counts Azure's less the estimates noted there too. So of two workers
reading it at the same moment, the one whose claim comes second drops it. What an
estimate adds is written in the background (no await on the answer's path); a resumed
stream reads what the database notes of its response before it is sent (`replaying`),
so that its replay is not estimated again where another worker's estimate counted it.
Each wait on the database is at most `DATABASE_WAIT`. What that leaves, exactly:

- a foreground response's read and a stored chat completion's read or update count
  nothing on any worker, at any time: told from the answer itself (its `background`,
  its route), never from the table;
- without a database, a background response's (or an Assistants run's) read, cancel
  or resumed stream answered by a worker whose table does not hold its id (another
  worker under `--workers N`, the gateway since restarted, or 16,384 newer ids since)
  counts Azure's whole usage once more on that worker, and an estimate of its cut
  stream made on another worker is not taken off: over- rather than under-counted;
- with one, Azure's usage is counted by the read whose claim committed first, and by
  no other: a claim not committing within `DATABASE_WAIT` (another process holding the
  write lock longer; the rest of the bound for a read whose client left during it, a
  second cancellation ending it), or failing, is withdrawn (`ClaimVerdict`: rolled
  back if it gets the lock later) and its read counts nothing; the next read answered
  in time counts it. A request that raised after Azure's usage (a client leaving a
  background stream at its end) counts it, its claim awaited (`gone`, the pipeline's
  and `CountedSend`'s) as a read's is: a read on another worker claiming first
  meanwhile counts it instead (was, session 30: claimed in the background, twice). Until
  then the ledger holds what the estimates of its cut streams counted, flagged
  estimated (a response read only while the database cannot take claims is left at
  its estimate, or at nothing, until a read: under- rather than over-counted);
- a resumed stream replays the events after its `starting_after` (all of them
  without one, as the SDK's `retrieve(stream=True)` asks): where an earlier stream of
  the response, cut or left, counted some of them in its estimate, on this worker or
  (noted in the database before the resume) another, the resumed one's estimate counts
  only the text deltas past the last one counted (`replayed`, by their
  `sequence_number`: the meter skips the rest), so output relayed twice is estimated
  once. An estimate not yet written when the stream is resumed elsewhere, or a
  database slower than `DATABASE_WAIT` then: twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.rereadclaims import DATABASE_WAIT, ClaimedUsage
from azure_openai_proxy.gateway.rereadclaims import NONE as _NONE
from azure_openai_proxy.gateway.rereadclaims import Claim as _Claim
from azure_openai_proxy.gateway.rereadclaims import spent as _spent
from azure_openai_proxy.gateway.spentusage import less, most
from azure_openai_proxy.gateway.streammeter import made_run
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, Target
from azure_openai_proxy.store.ownership import Counted

__all__ = ["DATABASE_WAIT", "CountedSend", "CountedUsage"]

Send = Callable[[HttpRequest, Target, Caller, RequestBody, RequestRecord,
                 tuple[Pool, str | None]], Awaitable[Reply]]


class CountedUsage(ClaimedUsage):
    """The ids of background responses and runs whose usage a read has counted."""

    async def gone(self, method: str, operation: str, record: RequestRecord,
                   body: Mapping[str, Any] | None) -> None:
        """`answered` for a request whose handler raised (its client left) before its
        record is written: what it counts whole (a background stream left at its end),
        its claim awaited as a read's is (`claimed`: withdrawn when not committed in
        time; dropped when another worker's claim committed first)."""
        claim = self.answered(method, operation, record, None, body)
        if claim is not None:
            try:
                await self.claimed(claim)
            finally:
                self.settled(claim)

    def answered(self, method: str, operation: str, record: RequestRecord,
                 answer: bytes | None, body: Mapping[str, Any] | None) -> _Claim | None:
        """After the answer (`answer`: a JSON one's bytes, else None) to a request for
        `operation` (its JSON `body`): a read's usage counted once (`reread`,
        `restreamed`), a background response's stream noted (`streamed`). Returns the
        claim to make in the database (`claimed`) of a read (or a background stream)
        that counted Azure's whole usage on this worker's memory, if a database is kept."""
        if method == "POST" and (operation == "responses" or made_run(operation)):
            return self.streamed(record, body, run=operation != "responses")
        if (method == "GET" or operation.endswith("/cancel") or operation.startswith("chat/")
              ) and record.usage is not None:
            if answer is not None:
                return self.reread(operation, record, answer)
            if record.stream:
                return self.restreamed(operation, record)
        return None

    def streamed(self, record: RequestRecord, body: Mapping[str, Any] | None,
                 run: bool = False) -> _Claim | None:
        """A `POST responses` ended (to its end, cut, or its client gone): a background
        one's stream counted it with Azure's usage, or at an estimate (a read counts the
        rest). Not a foreground one's: a read counts nothing of it, and its id would
        push counted background ones out of the bounded table. Azure's usage is claimed
        as a read's is (`_count`): a read of the completed response on another worker
        may have counted it before the stream's end reached here. `run`: a run's
        stream (`POST threads/{t}/runs`, `stream: true`: its id `record.created_id`,
        gateway/streammeter.py), counted so too: a read of the run counts nothing more."""
        response_id = record.created_id
        if (response_id is None or not record.stream
                or (not run and (body is None or body.get("background") is not True))):
            return None
        usage = record.usage
        if usage and not usage.get("estimated"):
            return self._count(response_id, record)
        spent = _spent(record, _NONE)
        self._counted.put(response_id, spent)
        self._note(response_id, (False, *spent))
        return None

    def replayed(self, method: str, operation: str) -> int:
        """Before a request is sent: for a resumed Responses stream (`GET
        responses/{id}`, relayed only if `stream=true`), the sequence number of the last
        text delta an estimate of its response counted (its meter counts none up to it:
        `RequestRecord.sequence`); else -1."""
        response_id = _response(method, operation)
        earlier = None if response_id is None else self._counted.get(response_id)
        return earlier[2] if type(earlier) is tuple else -1

    async def replaying(self, request: HttpRequest, operation: str) -> int:
        """`replayed`, for a request about to be sent; of a resumed stream (`stream=true`)
        that memory does not know as counted whole, what the database notes of its
        response is learnt first (the estimates of its streams on other workers, or its
        whole count), waiting at most `DATABASE_WAIT`: its replay is not estimated again."""
        method, store = request.method, self._store
        response_id = _response(method, operation)
        if response_id is None or store is None or not _streamed(request.query_string):
            return self.replayed(method, operation)
        earlier = self._counted.get(response_id)
        if earlier is None or type(earlier) is tuple:
            try:
                noted: Counted | None = await asyncio.wait_for(
                    store(lambda shared: shared.counted(response_id)), DATABASE_WAIT)
            except TimeoutError:
                noted = None  # a slow database: memory's alone, as before
            if noted is not None and self._counted.get(response_id) is earlier:
                self._counted.put(response_id, True if noted[0] else most(
                    earlier or _NONE, noted[1:]))  # (unless memory changed meanwhile)
        return self.replayed(method, operation)

    def restreamed(self, operation: str, record: RequestRecord) -> _Claim | None:
        """Drop `record`'s usage when the resumed stream it records (`operation`:
        responses/{id}; only a background response's can be) is of a response counted
        already; else Azure's usage it showed counts it, less what estimates counted
        (an estimate, of a stream left again, adds to those: a later read still counts
        Azure's)."""
        response_id = _response("GET", operation)
        if response_id is None:
            return None
        earlier, usage = self._counted.get(response_id), record.usage
        if type(earlier) is _Claim and earlier.record is record:
            return None  # its own count, made before its client left (`settled`)
        if earlier is True or type(earlier) is _Claim:
            record.usage = None  # counted already
        elif usage is not None and usage.get("estimated"):
            spent = earlier if type(earlier) is tuple else _NONE
            self._counted.put(response_id, _spent(record, spent))
            self._note(response_id, (False, *_spent(record, _NONE)))
        else:
            return self._count(response_id, record)
        return None

    def reread(self, operation: str, record: RequestRecord, body: bytes) -> _Claim | None:
        """Drop `record`'s usage when the GET (or cancel) it records read a stored
        object (`operation`, its answer `body`) whose generation was counted already."""
        parts = operation.split("/")
        if parts[0] == "chat":  # a stored chat completion read or updated: counted by
            record.usage = None  # the chat that made it (`store: true`)
            return None
        if parts[-1] == "cancel":  # answers the object as a read does
            parts.pop()
        response = len(parts) == 2 and parts[0] == "responses"
        run = len(parts) >= 4 and parts[0] == "threads" and parts[2] == "runs"
        if run and len(parts) == 6 and parts[4] == "steps":
            record.usage = None  # a step of a run: part of the run's usage, counted once
            return None  # at a read of the run
        if not (response or (run and len(parts) == 4)):
            return None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        if response and answer.get("background") is not True:
            record.usage = None  # counted by the POST that made it
            return None
        return self._count(parts[-1], record)

    def _count(self, object_id: str, record: RequestRecord) -> _Claim | None:
        """`record`'s usage (Azure's, of `object_id`'s whole generation) counts it: none
        when counted already, less the estimates that counted part of it. Memory knows
        it counted at once; with a database, the claim to make there is returned."""
        earlier = self._counted.get(object_id)
        if type(earlier) is _Claim and earlier.record is record:
            return None  # its own count, made before its client left (`settled`)
        if earlier is True or type(earlier) is _Claim:
            record.usage = None  # counted by an earlier read, or the stream
            return None
        usage = record.usage
        spent = earlier if type(earlier) is tuple else _NONE
        if type(earlier) is tuple and usage is not None:
            record.usage = less(usage, earlier)
        if self._store is None:
            self._counted.put(object_id, True)
            return None
        claim = _Claim(object_id, record, usage, spent)
        self._counted.put(object_id, claim)
        return claim


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
        (`record.created_id`), a resumed one's replay not counted again (`replaying`);
        `answered` after the answer, or when it raised (`gone`: its client left a
        background stream, its estimate read at the count, or Azure's usage claimed)."""
        method, operation, counted = request.method, target.operation, self._counted
        # (a GET's alone can be a resumed stream: no coroutine for the others)
        record.sequence = await counted.replaying(request, operation) if method == "GET" else -1
        claimed = method == "POST" and operation == "responses" and record.claim is None
        if claimed:
            record.claim = lambda ids: _created(record, ids)
        try:
            reply = await self._send(request, target, caller, body, record, routed)
        except BaseException:
            await counted.gone(method, operation, record, body.json)
            raise
        finally:
            if claimed:  # (the stream's meter has its own reference): no cycle through it
                record.claim = None
        answer = reply.body if isinstance(reply, Answer) else None
        claim = counted.answered(method, operation, record, answer, body.json)
        if claim is not None:
            try:  # counted on memory already, if its client leaves meanwhile
                await counted.claimed(claim)
            finally:
                counted.settled(claim)
        return reply


def _response(method: str, operation: str) -> str | None:
    """The response a `GET responses/{id}` names (a read, or its stream resumed), or None."""
    kind, _, response_id = operation.partition("/")
    if method != "GET" or kind != "responses" or not response_id or "/" in response_id:
        return None
    return response_id


def _streamed(query: str) -> bool:
    """Whether a query asks for a stream (`stream=true`)."""
    return any(name == "stream" and value.lower() == "true"
               for name, value in parse_qsl(query))


def _created(record: RequestRecord, ids: list[str]) -> None:
    """A Responses stream's ids as they pass: the first, the response's own."""
    if record.created_id is None and ids:
        record.created_id = ids[0]
