"""Objects Azure creates (files, batches, responses, vector stores, assistants,
threads...) belong to the virtual key that created them.

Azure keeps these objects per resource, not per caller: without this, any key could
list, read or delete what another key uploaded. The gateway records, when a virtual key's
POST creates an object, that the object is the key's. Then:

- a request naming an object that another key owns gets OpenAI's 404 for an object
  that is not yours: in its path (the first id; an id past it, such as a run of a
  thread, when known to be another key's), or anywhere in its body (`file_ids`,
  `tool_resources...vector_stores[].file_ids`, `training_file`, an `input_file` part,
  `attachments[].file_id`, `previous_response_id`, `conversation`...: affinity.py's
  `ids_referenced`, a walk bounded in depth and size; a body past the bounds is a 400;
  and a Responses `item_reference` in `input`, or in a conversation's `items`);
- a list (`GET /v1/files`, `/v1/batches`...) shows only the key's own objects (a
  retryable 503 when an owner is not in memory and the database failed or did not
  answer in time: never another key's object shown, nor the key's own left out);
- an object of unknown owner (made before a restart, by another worker, by a static
  or passthrough key, or forgotten past the bound) is refused (404; a retryable 503 when
  the database failed or did not answer in time) to a key with restrictions (an
  allow-list or a budget, its own or its team's), let through for a key without any.

Ownership is per key, not per team: keys of one team do not see each other's objects.

Owners are written to the governance database (`object_owners`, store/ownership.py)
before the creating answer leaves, so every worker and a restarted gateway know them;
the recent ones are also kept in memory, bounded (`_CAPACITY`). When the database
fails, or a look-up waits for it past `DATABASE_WAIT` (1 s: its one thread held up by
writes a locked database keeps waiting), memory alone answers (this worker's recent
objects; others are unknown).
A created response's `output` items are the key's with it (an `item_reference` may name
them), and so are those its owner reads later (`GET responses/{id}`: a background
response's), its input items once its owner lists them (`responses/{id}/input_items`), and
a conversation's items its owner adds or lists (`conversations/{id}/items`). A fine-tuning
job's model and checkpoints are its owner's once it reads the job, its checkpoints or the
job list (gateway/finetuned.py): `fine_tuning/checkpoints/{id}/...` names one.
A streamed `responses` call's id and output items are the key's too: the relay reads
them from the stream (normalize/responses_meter.py `ResponsesStreamMeter`) and `claim`s them as
the events naming them pass: in memory at once, in the database in the background. So a
stream the client leaves midway leaves what it showed the key's. A chat Azure stores
(`store: true`) is the key's: answered as JSON (`own_chat`), or streamed, `claim`ed as
its first frame shows its id (normalize/stream.py `ChatStreamNormalizer.claim`). A
`threads/runs` (create a thread and run it) makes the thread the key's with its run: the
thread its JSON answer names (`thread_id`), or, streamed, the one its first run event
names, claimed after the run (the meter's `thread_made`). Other objects created inside
another answer (an upload's file) are not recorded: a key with restrictions cannot name
them later.

Batch input files: when a virtual key with an allow-list uploads a file with purpose
`batch`, the models its lines name (`body.model`) are recorded with it
(gateway/batchcheck.py), so a batch made from it can be checked against the allow-list
when it is created.

Homes: the endpoint and deployment that answered the POST creating an object (and its
output items) are recorded with its owner (`Owned.home`), so every worker sends a request
about it there: `check` returns the homes of the objects a request names, which the
worker's affinity learns (affinity.py), and the pipeline routes (gateway/poolchoice.py)
and judges (a batch's lines: gateway/batchcheck.py) by them. Without one (recorded
before homes were), the affinity of the worker that saw it made, else the pool, decides.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.errors import GatewayError, NotFound, OwnersUnavailable
from azure_openai_proxy.gateway.affinity import Home, item_references
from azure_openai_proxy.gateway.chained import ChainedContext
from azure_openai_proxy.gateway.chatfiles import chat_file_ids
from azure_openai_proxy.gateway.finetuned import job_of, listed_models, named_models
from azure_openai_proxy.gateway.objectids import object_ids
from azure_openai_proxy.gateway.ownedanswers import (
    is_list,
    item_holder,
    list_ids,
    listed_ids,
    output_item_ids,
    run_thread_id,
)
from azure_openai_proxy.gateway.ownedpages import NextPage, own_page, pager
from azure_openai_proxy.gateway.ownerdatabase import OwnerDatabase
from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import OwnerRow, OwnerStore

__all__ = ["BatchNotAllowed", "ObjectNotFound", "ObjectOwners", "Owned", "chat_file_ids",
           "item_references", "object_ids", "owned_answer", "pager"]

_CAPACITY = 200_000


@dataclass(frozen=True, slots=True)
class Owned:
    """Who created an object; for a batch input file, the models its lines name (None:
    not a batch file, or a line the gateway could not read); its `home`, the endpoint
    and deployment that made it (None: not recorded), so every worker sends a request
    about it there (gateway/poolchoice.py)."""

    key_id: str
    models: frozenset[str] | None = None
    home: Home | None = None


class ObjectNotFound(NotFound):
    """OpenAI's answer for an object that does not exist or is not the caller's."""

    def __init__(self, object_id: str) -> None:
        super().__init__(f"No such object: {object_id}", param="id")


class BatchNotAllowed(GatewayError):
    """A batch this key may not create: its file names models the key may not use."""

    status = 403
    type_ = "invalid_request_error"
    code = "batch_not_allowed"


class ObjectOwners(OwnerDatabase):
    """object id -> `Owned`: the recent ones in memory (least recently used forgotten
    past `capacity`), all of them in the governance database when one is given (so every
    worker, and the gateway after a restart, knows them). The database is used from one
    thread of its own; when it fails, the memory alone answers (an unknown owner: the
    safe side, see the module's docstring)."""

    def __init__(self, capacity: int = _CAPACITY, database: Path | None = None) -> None:
        self._capacity = capacity
        self._owners: OrderedDict[str, Owned] = OrderedDict()
        super().__init__(database)
        # Stored objects whose usage a read counted (`owned_answer`, gateway/rereads.py).
        self.counted = CountedUsage(store=self._call if database is not None else None,
                                    writes=self._writes)  # (and across workers)
        # Each response's tokens, which a turn chained to it reads again (chained.py).
        self.chained = ChainedContext()

    async def remember(self, object_id: str, owned: Owned) -> None:
        """Record a new object's owner; an object already owned keeps its owner. Written
        to the database before the answer leaves, so another worker knows it at once."""
        if object_id not in self._owners:  # a new id: nothing to read back
            self._keep(object_id, owned)
            now = time.time()
            def add(store: OwnerStore) -> bool:
                store.add(object_id, owned.key_id, owned.models, now, owned.home)
                return True

            if await self._call(add) is None:  # written again later (ownerdatabase.py)
                self.unwritten((object_id,), (owned.key_id, owned.models, owned.home, now))

    async def remember_all(self, object_ids: Iterable[str], owned: Owned) -> None:
        """`remember` for several objects that may already exist (a response's items, a
        listing's), in one database trip.
        Memory keeps what the database holds after it: an id already recorded there
        (another worker's, or forgotten here) keeps its owner, never the claimant."""
        new = [object_id for object_id in dict.fromkeys(object_ids)
               if object_id not in self._owners]
        if not new:
            return
        recorded = await self._written(new, owned)
        for object_id in new:
            row = recorded.get(object_id)
            self._keep(object_id, owned if row is None else Owned(*row))

    def claim(self, object_ids: Iterable[str], owned: Owned) -> None:
        """`remember_all` without waiting: for the ids a stream creates, claimed as the
        events naming them pass, before they reach the client (no await on a stream's
        path). Memory knows them at once, so this worker answers the client's next
        request; the database is written in the background (another worker knows them a
        moment later). An id the database already holds keeps its owner there, and
        memory takes it back from the database once written."""
        new = [object_id for object_id in dict.fromkeys(object_ids)
               if object_id not in self._owners]
        if not new:
            return
        for object_id in new:
            self._keep(object_id, owned)
        if self._database is not None:
            write = asyncio.get_running_loop().create_task(self._write_claim(new, owned))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    def claimer(self, key_id: str, record: RequestRecord) -> Callable[[list[str]], None]:
        """`claim`, for the ids a Responses stream (or a stored chat's stream) of
        `key_id`'s creates; the first (the response's own) kept as `record.created_id`,
        as a non-streamed answer's is (`owned_answer` notes its tokens for a turn chained
        to it). Their home: the deployment the stream comes from (`record`'s)."""

        def claim(object_ids: list[str]) -> None:
            if record.created_id is None and object_ids:
                record.created_id = object_ids[0]
            self.claim(object_ids, Owned(key_id, None, _made_on(record)))

        return claim

    async def stream_claim(self, request: HttpRequest, operation: str, key_id: str,
                           record: RequestRecord) -> Callable[[list[str]], None] | None:
        """The `claim` of a Responses stream `key_id` asks for: a POST's (`claimer`; a
        `threads/runs`' too, which claims the run and the thread it made), or
        a background response's resumed (`GET responses/{id}?stream=true`) when the
        response is the key's own (`check` has just read its owner into memory): the
        items it shows are the key's with it, as a read's are (`owned_answer`)."""
        method = request.method
        if method == "POST":
            made = operation == "responses" or operation == "threads/runs"
            return self.claimer(key_id, record) if made else None
        record.sequence = await self.counted.replaying(request, operation)  # (rereads.py)
        if method == "GET" and operation.count("/") == 1:
            owned = self._owners.get(operation.partition("/")[2])
            if owned is not None and owned.key_id == key_id:
                return partial(self.claim, owned=owned)
        return None

    def keep_chained(self, key_id: str, noted: list[tuple[str, int]]) -> None:
        """Write what `chained` noted to the database in the background (no await on
        the answer's path), so a turn after a restart counts it."""
        if noted and self._database is not None:
            now = time.time()
            write = asyncio.get_running_loop().create_task(
                self._call(lambda store: store.note_contexts(key_id, noted, now)))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def reserve_chained(self, body: Mapping[str, Any] | None, key_id: str) -> int:
        """`chained.reserve` for a turn whose predecessor no worker knows (it guessed):
        what the database kept of it (a restart since) is learnt first; still unknown,
        the guess. One query, only on a miss."""
        names = self.chained.named(body)
        if names and self._database is not None:
            kept = await self._call(lambda store: store.contexts(key_id, names)) or {}
            for name, tokens in kept.items():
                self.chained.learn(key_id, name, tokens)
        return self.chained.reserve(body, key_id)

    async def own_chat(self, key_id: str, record: RequestRecord, reply: Reply) -> None:
        """A chat Azure stored (`store: true`), answered as JSON: the key's, made where it
        was answered. A stream's is claimed as it shows its id (`claimer`)."""
        if isinstance(reply, Answer) and 200 <= reply.status < 300:
            try:
                answer = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                return
            made = answer.get("id") if isinstance(answer, dict) else None
            if isinstance(made, str) and made:
                await self.remember(made, Owned(key_id, None, _made_on(record)))

    async def _written(self, new: list[str], owned: Owned) -> dict[str, OwnerRow]:
        """`new`'s owners recorded (`_recording`); when the write failed, kept to be
        written again later (ownerdatabase.py), and {}."""
        recorded = await self._call(_recording(new, owned))
        if recorded is None:
            self.unwritten(new, (owned.key_id, owned.models, owned.home, time.time()))
        return recorded or {}

    async def _write_claim(self, new: list[str], owned: Owned) -> None:
        recorded = await self._written(new, owned)
        for object_id, row in recorded.items():
            if row[0] != owned.key_id and object_id in self._owners:
                self._owners[object_id] = Owned(*row)

    async def get(self, object_id: str) -> Owned | None:
        """The owner of `object_id` if known (None also when the database did not answer)."""
        owned = self._owners.get(object_id)
        if owned is not None:  # (no list, no dict: 40% of `_get_many`'s instructions)
            self._owners.move_to_end(object_id)
            return owned
        return (await self._get_many([object_id]))[0].get(object_id)

    async def check(self, ids: Iterable[str], key_id: str, restricted: bool,
                    inner: Iterable[str] = ()) -> list[tuple[str, Home]]:
        """Raise `ObjectNotFound` for the first id that is not this key's to use: of
        `ids`, one another key owns, or (`restricted`) one of unknown owner; of `inner`
        (sub-objects of an object already checked), one another key owns. Each distinct
        id is looked up once; those not in memory in one database query per chunk.
        Returns the homes recorded for `ids` (for this worker's affinity to `learn`)."""
        named = list(dict.fromkeys(ids))
        within = list(dict.fromkeys(inner))
        owners, answered = await self._get_many(named + within)
        homes = []
        for object_id in named:
            owned = owners.get(object_id)
            if owned is None:
                if restricted:  # not known to be gone when the database did not answer
                    raise ObjectNotFound(object_id) if answered else OwnersUnavailable(object_id)
            elif owned.key_id != key_id:
                raise ObjectNotFound(object_id)
            elif owned.home is not None:
                homes.append((object_id, owned.home))
        for object_id in within:
            owned = owners.get(object_id)
            if owned is not None and owned.key_id != key_id:
                raise ObjectNotFound(object_id)
        return homes

    async def _get_many(self, object_ids: list[str]) -> tuple[dict[str, Owned], bool]:
        """The known owners of distinct `object_ids`: memory first, the rest at once; and
        whether a database kept asked answered (not failing, within `DATABASE_WAIT`)."""
        found: dict[str, Owned] = {}
        rest: list[str] = []
        for object_id in object_ids:
            owned = self._owners.get(object_id)
            if owned is None:
                rest.append(object_id)
            else:
                self._owners.move_to_end(object_id)
                found[object_id] = owned
        rows = await self._look(lambda store: store.get_many(rest)) if rest else {}
        for object_id, row in (rows or {}).items():
            owned = Owned(*row)
            self._keep(object_id, owned)
            found[object_id] = owned
        return found, rows is not None or self._database is None

    async def owner(self, object_id: str) -> Owned | None:
        """`get`, for a request judged by it (a batch's input file): `OwnersUnavailable`
        (a retryable 503) when a database kept did not answer in time, or failed."""
        owners, answered = await self._get_many([object_id])
        if not answered:
            raise OwnersUnavailable(object_id)
        return owners.get(object_id)

    async def owned_of(self, key_id: str, object_ids: list[str]) -> set[str]:
        """Those of `object_ids` that `key_id` owns; `OwnersUnavailable` as `owner`'s
        when one is not in memory: a list is not guessed."""
        mine = set()
        rest = []
        for object_id in object_ids:
            owned = self._owners.get(object_id)
            if owned is None:
                rest.append(object_id)
            elif owned.key_id == key_id:
                mine.add(object_id)
        if rest and self._database is not None:
            found = await self._look(lambda store: store.owned_of(key_id, rest))
            if found is None:
                raise OwnersUnavailable("the objects listed")
            mine |= found
        return mine

    def _keep(self, object_id: str, owned: Owned) -> None:
        self._owners[object_id] = owned
        self._owners.move_to_end(object_id)
        if len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def __len__(self) -> int:
        return len(self._owners)


def _made_on(record: RequestRecord) -> Home | None:
    """The home of what `record`'s request created: the deployment that answered it."""
    endpoint, deployment = record.endpoint, record.deployment
    return (endpoint, deployment) if endpoint and deployment else None


def _recording(new: list[str], owned: Owned) -> Callable[[OwnerStore], dict[str, OwnerRow]]:
    """The store call that records `new` as `owned`'s (an id already there keeps its
    owner) and reads back who owns each."""
    now = time.time()

    def add(store: OwnerStore) -> dict[str, OwnerRow]:
        for object_id in new:
            store.add(object_id, owned.key_id, owned.models, now, owned.home)
        return store.get_many(new)

    return add


async def owned_answer(
    owners: ObjectOwners, method: str, operation: str, key_id: str, record: RequestRecord,
    reply: Reply, batch_models: frozenset[str] | None,
    body: Mapping[str, Any] | None = None, more: NextPage | None = None,
) -> Reply:
    """A resource answer for a virtual key (its request's JSON `body`): a created
    object becomes the key's, a list shows only the key's own objects (its next pages
    asked by `more` while they hold none: gateway/ownedpages.py)."""
    # a read's usage (a stored object's, a background one's resumed), counted once
    answer = reply.body if isinstance(reply, Answer) else None
    claim = owners.counted.answered(method, operation, record, answer, body)
    try:  # (the database's claim of it: another worker's, or this one's before a restart)
        if claim is not None:
            await owners.counted.claimed(claim)
        return await _owned(owners, method, operation, key_id, record, reply, batch_models,
                            body, more)
    finally:
        owners.counted.settled(claim)


async def _owned(
    owners: ObjectOwners, method: str, operation: str, key_id: str, record: RequestRecord,
    reply: Reply, batch_models: frozenset[str] | None, body: Mapping[str, Any] | None,
    more: NextPage | None,
) -> Reply:
    """`owned_answer`'s, once the read's usage is counted: what the answer made the key's."""
    if method == "POST" and record.created_id is not None:
        # Where it was made (its output items too): a request about it goes there.
        owned = Owned(key_id, batch_models, _made_on(record))
        await owners.remember(record.created_id, owned)
        if operation == "responses":
            owners.keep_chained(key_id, owners.chained.note(key_id, record.created_id,
                                                            record.usage, body))
            if isinstance(reply, Answer):
                await owners.remember_all(output_item_ids(reply.body), owned)
        elif operation == "responses/compact" and isinstance(reply, Answer):
            await owners.remember_all(output_item_ids(reply.body), owned)  # as a turn's
        elif operation == "threads/runs" and isinstance(reply, Answer):  # its new thread
            made = run_thread_id(reply.body)
            if made is not None:
                await owners.remember(made, owned)
        elif operation == "conversations":  # its first turn's context: known, not guessed
            owners.keep_chained(key_id, owners.chained.started(key_id, record.created_id,
                                                               body))
    elif is_list(method, operation) and isinstance(reply, Answer) and reply.status == 200:
        listed = list_ids(reply.body)
        if listed is not None:
            page, reply.body = await own_page(partial(owners.owned_of, key_id), listed, more)
            if operation == "fine_tuning/jobs":  # the key's jobs: their models are its
                await owners.remember_all(listed_models(page["data"]), Owned(key_id))
    elif isinstance(reply, Answer) and reply.status == 200 and (
            job := job_of(method, operation)) is not None:
        # A job read or its checkpoints listed (checked as this key's, or of unknown
        # owner): the models and checkpoints they name are the key's when the job is.
        owner = await owners.get(job)
        if owner is not None and owner.key_id == key_id:
            await owners.remember_all(named_models(reply.body), Owned(key_id))
    elif isinstance(reply, Answer) and reply.status == 200 and (
            holder := item_holder(method, operation)) is not None:
        # Items of a response or a conversation (checked as this key's, or of unknown
        # owner, before it was sent): the key may reference them later. Claimed only when
        # the response or conversation is its own.
        owner = await owners.get(holder)
        if owner is not None and owner.key_id == key_id:
            parent = operation.count("/") == 1  # `responses/{id}`: its output items
            items = output_item_ids(reply.body) if parent else listed_ids(reply.body)
            await owners.remember_all(items, Owned(key_id))
    return reply
