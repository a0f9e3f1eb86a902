"""A read's claim of a stored object's whole usage in the object owners' database
(gateway/rereads.py has the rules of which reads count): memory's entry while it is
made, its transaction's verdict (committed or withdrawn), and what an estimate adds,
written in the background. `CountedUsage` (rereads.py) is built on `ClaimedUsage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.gateway.spentusage import less, most
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import ClaimVerdict, ClaimWithdrawn, Counted, OwnerStore

__all__ = ["DATABASE_WAIT", "NONE", "Claim", "ClaimedUsage", "Spent", "Store", "spent"]

_CAPACITY = 16_384  # object ids (about 40 bytes each)
# The longest a request waits for the object owners' database (a read's claim, a resumed
# stream's look-up, an owner's: gateway/ownership.py): one indexed query takes a
# millisecond, but it queues in the object owners' one thread behind their writes, each
# of which a locked database holds up to its busy timeout (5 s). Past it, the request
# goes on as if the database had failed (a read's claim withdrawn, its usage not
# counted: the next read counts it) and the client has its answer.
DATABASE_WAIT = 1.0
# (prompt, completion) tokens that the estimates of a cut stream's POST and of resumed
# streams cut again counted of an object, and the sequence number of the last text delta
# they counted.
Spent = tuple[int, int, int]
NONE: Spent = (0, 0, -1)
# `ObjectOwners._call`: work on the governance database's store, in its thread (None when
# it fails).
Store = Callable[[Callable[[OwnerStore], Any]], Coroutine[Any, Any, Any]]


class Claim:
    """Azure's whole usage of an object, counted by `record` on this worker's memory
    (`usage`, Azure's, less the estimates memory knew: `spent`) while its claim in the
    database is made: memory's entry for the object until `settled`. Another read then
    drops its usage; `record`'s own `answered` again (`gone`: gateway/pipeline.py's, its
    client gone during the claim) keeps it."""

    __slots__ = ("object_id", "record", "spent", "usage")

    def __init__(self, object_id: str, record: RequestRecord, usage: dict[str, Any] | None,
                 spent: Spent) -> None:
        self.object_id, self.record, self.usage, self.spent = object_id, record, usage, spent


# An object's entry: True, counted whole; a claim, counted whole by a request still
# going; or what estimates counted of it.
_Counted = bool | Claim | Spent


class ClaimedUsage:
    """Memory's entries of the objects whose usage was counted, and their claims in the
    database (`claimed`); `CountedUsage` decides which reads count."""

    def __init__(self, capacity: int = _CAPACITY, store: Store | None = None,
                 writes: set[asyncio.Task[Any]] | None = None) -> None:
        self._counted: BoundedCache[str, _Counted] = BoundedCache(capacity)
        self._store = store
        # `_note`'s and the claims', until written (`ObjectOwners.written` waits at a stop)
        self._writes: set[asyncio.Task[Any]] = set() if writes is None else writes

    async def claimed(self, claim: Claim) -> None:
        """After `answered` counted Azure's whole usage of a background response or a run
        on this worker's memory (before any await: a read meanwhile finds it counted):
        its claim in the database (`OwnerStore.claim_counted`, one transaction, so that of
        the workers claiming it at once one counts it). Noted whole there already
        (another worker's read, or this gateway's before a restart): the record's usage
        is dropped; else Azure's less the larger of each estimate here and there. Waits at
        most `DATABASE_WAIT` (its client gone meanwhile: the rest of it, a second
        cancellation ends it): a claim not committing by then (a slow or locked
        database), or failing, is withdrawn (`_withdrawn`): never written, the usage
        dropped, the next read counts it. One committing then is waited for (moments)."""
        loop = asyncio.get_running_loop()
        verdict = ClaimVerdict()
        task, until = self._claiming(claim, verdict), loop.time() + DATABASE_WAIT
        try:
            await asyncio.wait((task,), timeout=DATABASE_WAIT)  # (the claim goes on past it)
        except asyncio.CancelledError:
            # Its client left, its answer whole (httpx.get closes the connection at a
            # stream's end): the record is written after this, when the handler ends, so
            # the claim's answer is still waited for, within the bound.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((task,), timeout=max(0.0, until - loop.time()))
            await self._decided(claim, task, verdict)
            raise
        await self._decided(claim, task, verdict)

    async def _decided(self, claim: Claim, task: asyncio.Task[tuple[Counted | None] | None],
                       verdict: ClaimVerdict) -> None:
        """`claim`'s record's usage once its claim is committed (`_claimed`) or withdrawn
        (`_withdrawn`); its commit begun, the wait for it is not cancelled (moments)."""
        if not task.done() and not verdict.withdraw():
            cancelled = False
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    cancelled = True
                except Exception:  # its failure is read below (`_settle`)
                    break
            if cancelled:
                self._settle(claim, task)
                raise asyncio.CancelledError
        self._settle(claim, task)

    def _settle(self, claim: Claim, task: asyncio.Task[tuple[Counted | None] | None]) -> None:
        answered = task.done() and not task.cancelled() and task.exception() is None
        result = task.result() if answered else None
        if result is None:
            self._withdrawn(claim)
        else:
            _claimed(claim, result[0])

    def _withdrawn(self, claim: Claim) -> None:
        """A claim never written (withdrawn, or the database failed): its record counts
        nothing, and memory forgets the count (the estimates it knew stay), so that the
        next read, here or on another worker, claims and counts it: at most once."""
        claim.record.usage = None
        if self._counted.get(claim.object_id) is claim:
            self._counted.put(claim.object_id, claim.spent)

    def _claiming(self, claim: Claim, verdict: ClaimVerdict | None
                  ) -> asyncio.Task[tuple[Counted | None] | None]:
        """The claim's write (`OwnerStore.claim_counted`), in the background: what was
        noted before it, in a tuple (None: withdrawn, or the database failed)."""
        store, object_id, now = self._store, claim.object_id, time.time()
        assert store is not None

        def claim_counted(shared: OwnerStore) -> tuple[Counted | None] | None:
            try:
                return (shared.claim_counted(object_id, now, verdict),)
            except ClaimWithdrawn:
                return None

        task: asyncio.Task[tuple[Counted | None] | None] = (
            asyncio.get_running_loop().create_task(store(claim_counted)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    def settled(self, claim: Claim | None) -> None:
        """The request that made `claim` is done with its record: memory's entry for the
        object becomes a plain count. Soon, not now: a handler whose client left during
        its claim is cancelled there, and the pipeline's `gone` for a client gone runs
        next, in the same turn of the loop."""
        if claim is not None:
            asyncio.get_running_loop().call_soon(self._plain, claim)

    def _plain(self, claim: Claim) -> None:
        if self._counted.get(claim.object_id) is claim:
            self._counted.put(claim.object_id, True)

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


def _claimed(claim: Claim, noted: Counted | None) -> None:
    """`claim`'s record's usage as its committed claim's answer makes it (`noted`: what
    was noted in the database before it)."""
    if noted is None:
        return
    if noted[0]:
        claim.record.usage = None  # counted by another worker, or before a restart
        return
    spent = most(claim.spent, noted[1:])
    if spent != claim.spent and claim.usage is not None:
        claim.record.usage = less(claim.usage, spent)


def spent(record: RequestRecord, earlier: tuple[int, int, int]) -> tuple[int, int, int]:
    """`earlier` (prompt, completion) tokens counted, and `record`'s estimate's now; the
    last text delta either counted (`record.sequence`, its meter's)."""
    prompt, completion = record.tokens()
    return (earlier[0] + (prompt or 0), earlier[1] + (completion or 0),
            max(earlier[2], record.sequence))
