"""The object owners' governance database (store/ownership.py's `OwnerStore`), used from
one thread of its own: `ObjectOwners`'s (gateway/ownership.py) calls to it, their
waits, their failures (memory alone answers), and its background writes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from azure_openai_proxy.gateway.rereads import DATABASE_WAIT
from azure_openai_proxy.store.ownership import OwnerStore
from azure_openai_proxy.store.replaced import FileWatch
from azure_openai_proxy.store.sqlite import LockWaits

log = logging.getLogger("azure_openai_proxy")
_T = TypeVar("_T")

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

    async def written(self) -> None:
        """Wait until the database holds every id claimed, and every count of a read
        noted (`counted`), so far (or has failed)."""
        while self._writes:
            await asyncio.gather(*self._writes)

    def close(self) -> None:
        """Close the database (its thread closes it); the memory stays usable."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._close_store)
            if self._watch is not None:
                thread.submit(self._watch.release)
            thread.shutdown(wait=True)

    async def _call(self, work: Callable[[OwnerStore], _T]) -> _T | None:
        if self._database is None:
            return None
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="object-owners")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._thread, self._in_thread, work)
        except (sqlite3.Error, OSError) as exc:
            if not self._failing:
                log.warning("object owners: the database failed (%s); using memory only",
                            type(exc).__name__)
            self._failing = True
            return None
        self._failing = False
        return result

    async def _look(self, work: Callable[[OwnerStore], _T]) -> _T | None:
        """`_call` for a look-up on a request's way: at most `DATABASE_WAIT` (rereads.py),
        then None (not known, as when the database fails: for a restricted key a 503)."""
        try:
            return await asyncio.wait_for(self._call(work), DATABASE_WAIT)
        except TimeoutError:
            return None

    def _in_thread(self, work: Callable[[OwnerStore], _T]) -> _T:
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
        return work(self._store)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
