"""The object owners' governance database (store/ownership.py's `OwnerStore`), used from
one thread of its own: `ObjectOwners`'s (gateway/ownership.py) calls to it, their
waits, their failures (memory alone answers), and its background writes.

An owner whose write failed when its object was made (a database locked past its busy
timeout, or failing) is kept (`unwritten`) and written again by a call of its own, a
moment later (`_REWRITE_FIRST`, then less and less often while it fails), and at a stop
(`written`): not before other calls, so that a look-up (a read, which a write lock held
elsewhere does not stop) never waits for a write; `_REWRITE_CHUNK` of them a call, in one
transaction, the next chunk queued behind the calls that came meanwhile (thousands of
them, one call, held the thread for seconds: every look-up then ran out of its
`DATABASE_WAIT`, a restricted key's 503). Memory answered for it meanwhile on
this worker alone; other workers learn it once written. Lost only if the database still
fails at the stop (or past `_UNWRITTEN_MOST` of them: the oldest).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from azure_openai_proxy.gateway.rereads import DATABASE_WAIT
from azure_openai_proxy.store.ownership import OwnerStore
from azure_openai_proxy.store.replaced import FileWatch
from azure_openai_proxy.store.sqlite import LockWaits

log = logging.getLogger("azure_openai_proxy")
_T = TypeVar("_T")
# An owner not written yet: (key id, a batch file's models, home, when it was made).
Unwritten = tuple[str, frozenset[str] | None, tuple[str, str] | None, float]
_REWRITE_FIRST = 1.0  # s after a failed write, its owners are written again; doubled
_REWRITE_LAST = 30.0  # at each failure up to this
_UNWRITTEN_MOST = 200_000
_REWRITE_CHUNK = 500  # owners written again by one call (one transaction: a few ms)

__all__ = ["OwnerDatabase"]


class OwnerDatabase:
    """The governance database of `ObjectOwners` (None: memory alone), in one thread."""

    def __init__(self, database: Path | None) -> None:
        self._database = database
        self._watch = None if database is None else FileWatch(database)  # store/replaced.py
        self._store: OwnerStore | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._failing = False
        self._waits = LockWaits()  # its stores', one after another (store/sqlite.py)
        self._writes: set[asyncio.Task[Any]] = set()  # `claim`'s, until written
        self._unwritten: dict[str, Unwritten] = {}  # owners whose write failed
        self._rewrite: asyncio.Handle | None = None  # their next write (a chunk)
        self._rewrite_after = _REWRITE_FIRST
        self._closed = False

    def unwritten(self, object_ids: Iterable[str], owner: Unwritten) -> None:
        """Owners whose write failed (`_call` answered None): written again later."""
        if self._database is not None:
            self._kept(dict.fromkeys(object_ids, owner))

    async def written(self) -> None:
        """Wait until the database holds every id claimed, and every count of a read
        noted (`counted`), so far (or has failed); the owners whose write failed are
        tried once more (a stop), chunk after chunk while they are written."""
        while True:
            while self._writes:
                await asyncio.gather(*self._writes)
            left = len(self._unwritten)
            if not left:
                return
            await self._call(_nothing, rewrite=True)
            if len(self._unwritten) >= left:
                return  # still failing: lost if it fails through the stop

    def close(self) -> None:
        """Close the database (its thread closes it); the memory stays usable."""
        self._closed = True  # (no more rewrites: `_rewrite_now`)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._close_store)
            if self._watch is not None:
                thread.submit(self._watch.release)
            thread.shutdown(wait=True)

    async def _call(self, work: Callable[[OwnerStore], _T], rewrite: bool = False
                    ) -> _T | None:
        """`work` in the owners' thread (None when the database fails); `rewrite`: a
        chunk of the owners whose write failed (the oldest) written first."""
        if self._database is None:
            return None
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="object-owners")
        loop = asyncio.get_running_loop()
        pending: dict[str, Unwritten] = {}
        if rewrite:
            unwritten = self._unwritten
            pending = {object_id: unwritten.pop(object_id)
                       for object_id in list(islice(unwritten, _REWRITE_CHUNK))}
        try:
            result, left = await loop.run_in_executor(self._thread, self._in_thread, work,
                                                      pending)
        except (sqlite3.Error, OSError) as exc:
            self._kept(pending)
            if not self._failing:
                log.warning("object owners: the database failed (%s); using memory only",
                            type(exc).__name__)
            self._failing = True
            return None
        except BaseException:  # cancelled (a look-up's bound): kept, written again (an
            self._kept(pending)  # owner written twice keeps its first row)
            raise
        self._kept(left)
        self._failing = False
        if pending and not left and self._unwritten:  # the next chunk, behind the calls
            self._rewrite_after = _REWRITE_FIRST  # queued meanwhile
            if self._rewrite is None and not self._closed:
                self._rewrite = loop.call_soon(self._rewrite_now)
        return result

    def _kept(self, owners: dict[str, Unwritten]) -> None:
        """`owners` not written: kept (the oldest dropped past `_UNWRITTEN_MOST`) and
        written again by a call of their own after a while (`_rewrite_now`)."""
        if not owners:
            if not self._unwritten:
                self._rewrite_after = _REWRITE_FIRST
            return
        unwritten = self._unwritten
        for object_id, owner in owners.items():
            unwritten.setdefault(object_id, owner)  # (a newer failure's keeps its first)
        while len(unwritten) > _UNWRITTEN_MOST:
            del unwritten[next(iter(unwritten))]
        if self._rewrite is None and not self._closed:
            self._rewrite = asyncio.get_running_loop().call_later(
                self._rewrite_after, self._rewrite_now)
            self._rewrite_after = min(self._rewrite_after * 2, _REWRITE_LAST)

    def _rewrite_now(self) -> None:
        self._rewrite = None
        if self._unwritten and not self._closed:
            write = asyncio.get_running_loop().create_task(self._call(_nothing, rewrite=True))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def _look(self, work: Callable[[OwnerStore], _T]) -> _T | None:
        """`_call` for a look-up on a request's way: at most `DATABASE_WAIT` (rereads.py),
        then None (not known, as when the database fails: for a restricted key a 503)."""
        try:
            return await asyncio.wait_for(self._call(work), DATABASE_WAIT)
        except TimeoutError:
            return None

    def _in_thread(self, work: Callable[[OwnerStore], _T], pending: dict[str, Unwritten]
                   ) -> tuple[_T, dict[str, Unwritten]]:
        """`work`, the owners whose write failed written first (those still not: returned)."""
        watch = self._watch
        assert self._database is not None and watch is not None
        if self._store is not None and watch.replaced():
            self._close_store()  # another file at the path, or none: writes would be lost
        if self._store is None:
            watch.check()  # the replaced one's -wal beside the new file: ReplacedInUse
            if watch.file is not None and not self._database.exists():
                raise FileNotFoundError(self._database)  # an empty one must not stand in
            watch.opening()
            self._store = OwnerStore.open(self._database, self._waits)
            watch.opened()
        left = _rewritten(self._store, pending) if pending else pending
        return work(self._store), left

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _nothing(store: OwnerStore) -> None:
    """A call for the owners whose write failed alone (`_in_thread` writes them)."""


def _rewritten(store: OwnerStore, pending: dict[str, Unwritten]) -> dict[str, Unwritten]:
    """Write `pending`'s owners (an id recorded meanwhile keeps its owner): those not
    written (all of them, when the database fails)."""
    try:
        store.add_again((object_id, *owner) for object_id, owner in pending.items())
    except sqlite3.Error:
        return pending
    return {}
