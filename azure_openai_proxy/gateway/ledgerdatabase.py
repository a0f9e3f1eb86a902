"""The ledger writer's database side (`LedgerWriter`'s base, ledger.py): the store opened
(and closed when its file is replaced or gone), rows written, the spool replayed, the
retention applied and the budgets' book read back. Called on the writer's thread, or in
`start`/`close`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

from azure_openai_proxy.gateway.ledgerrows import RowPricer
from azure_openai_proxy.gateway.ledgerspool import LedgerSpool
from azure_openai_proxy.governance.budget import BudgetGuard, SpendBook, earliest_period_start
from azure_openai_proxy.store.ledger import Labels, LedgerRow, LedgerStore
from azure_openai_proxy.store.replaced import FileWatch, file_identity
from azure_openai_proxy.store.sqlite import LockWaits

__all__ = ["LedgerDatabase"]

log = logging.getLogger("azure_openai_proxy")


class LedgerDatabase:
    """The database's side of `LedgerWriter` (its state is set by `LedgerWriter.__init__`)."""

    database: Path
    spool_path: Path
    guard: BudgetGuard
    failures: int
    _spool_file: LedgerSpool
    _pricer: RowPricer
    _retention: float
    _batch: int
    _busy_ms: int
    _waits: LockWaits
    _clock: Callable[[], float]
    _store: LedgerStore | None
    _opened: bool
    _generation: int
    _label_epoch: int
    _unlabelled: bool
    _watch: FileWatch
    _last_retention: float
    _last_refresh: float
    _unread: list[str]
    _spooled: deque[str]
    _awaiting: set[str]

    def _label_of(self, labels: Labels) -> int:
        """A combination's label id in the open store (0: none open, or it failed: the
        store looks it up when the rows are written). After a failure, none is asked
        for the rest of the batch: a locked database makes each ask wait its busy
        timeout."""
        store = self._store
        if store is None or self._unlabelled:
            return 0
        try:
            return store.label_id(labels)
        except Exception:
            self._unlabelled = True
            return 0

    def _write(self, batch: list[LedgerRow], generation: int) -> bool:
        store = self._open()
        if store is None:
            return False
        if generation != self._generation:  # opened anew since the batch was priced
            batch = [(*row[:2], 0, *row[3:]) for row in batch]
        try:
            store.write_rows(batch, priced=True)
        except Exception as exc:
            self._failed(exc)
            return False
        finally:
            self._forget_stale_labels()
        pending = self.guard.pending()
        if pending:
            self._unread.extend(r[1] for r in batch if r[1] in pending)
        return True

    def _forget_stale_labels(self) -> None:
        """The open store let its label ids go (the database restored in place, seen by
        a write or the spool's replay): so does the pricer."""
        store = self._store
        if store is not None and store.label_epoch != self._label_epoch:
            self._label_epoch = store.label_epoch
            self._pricer.forget_labels()

    def _open(self) -> LedgerStore | None:
        if self._store is not None and self._watch.replaced():
            # Removed or replaced under the open connection: what it wrote now would go
            # to the old, unlinked file, and be lost.
            self._close_store()
        if self._store is None:
            try:
                if self._opened and file_identity(self.database) is None:
                    # Gone after it was opened (deleted, its directory removed): an empty
                    # one made here would stand in for the lost one, as the key directory
                    # refuses to. The records spool until it is back (restored, or made
                    # by the CLI or a restart).
                    raise FileNotFoundError(f"{self.database} is gone")
                # Moved in with the replaced one's -wal beside, which SQLite would apply to
                # it (a backup then held the old usage rows): ReplacedInUse, and spooled.
                self._watch.check()
                self._watch.opening()
                self._store = LedgerStore.open(self.database, busy_timeout_ms=self._busy_ms,
                                               waits=self._waits)
                self._watch.opened()
                self._generation += 1
                self._label_epoch = self._store.label_epoch
                self._pricer.forget_labels()  # the ids it remembers may not be this one's
                self._opened = True
            except Exception as exc:
                self._failed(exc)
                return None
        return self._store

    def _close_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("usage ledger: database unavailable (%s: %s); records go to %s "
                        "until it is back", type(exc).__name__, exc, self.spool_path)
        self._close_store()

    def _refresh_budgets(self, store: LedgerStore) -> None:
        """Every worker's spend, from the rollups: the days of the longest period that
        can be current, and one total per owner for the days before (budgets with no
        period). The holds of the records this worker wrote since the last read go with
        it, and those of the records its event loop spooled once the book has them
        (whichever worker replayed the spool) or once the spool they went to is gone
        and the database does not have them (a line cut by a crash: lost)."""
        with contextlib.suppress(Exception):
            awaiting, spooled = self._awaiting, self._spooled
            while spooled:
                awaiting.add(spooled.popleft())
            # Before the database is read: a spool replayed is committed, then removed.
            spool_gone = (bool(awaiting) and not self.spool_path.exists()
                          and not self._spool_file.kept)  # nor rows kept in memory
            since = earliest_period_start(self._clock())
            read_at = self.guard.book_read_started()  # what was committed before is in it
            rows, recorded = store.spend_and_recorded(since, awaiting)
            released = set(awaiting) if spool_gone else recorded
            self.guard.replace(SpendBook.from_rows(rows), [*self._unread, *released], read_at)
            awaiting -= released
            self._unread = []  # only this thread (or start(), before it) touches it
            self._last_refresh = self._clock()

    def _replay(self, store: LedgerStore) -> bool:
        """Write the spool's records to the database, then remove it. True if any."""
        replayed = self._spool_file.replay(store, self._batch)
        if replayed is None:
            return False
        log.info("usage ledger: %d spooled records written to the database", replayed)
        return True
