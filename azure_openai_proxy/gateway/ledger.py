"""The usage ledger's writer: every finished request becomes a row of the usage ledger
in the database, off the request path, and nothing is lost.

    event loop: add(record)  -> a deque (one append; no pricing, no I/O, no lock)
    writer thread, every 0.5 s or 2,000 records (the loop sets its event once per 2,000):
        price the records into plain row tuples (ledgerrows.py), 256 at a time (the GIL
                             let go between), the first 13 values of each the
                             parameters it binds, its label id remembered with its names
                          -> LedgerStore.write_rows (one transaction of as few
                             statements as there can be: multi-row INSERTs whose
                             parameters are the rows' slices joined in C, one upsert
                             of the batch's rollups: counts summed by SQLite,
                             without the GIL, for a batch of one label and day; else,
                             and its cost always, in C)
        database error    -> the spool file (JSON lines next to the database:
                             ledgerspool.py; it failing too, in memory up to max_buffer)
        database back     -> the spool replayed (idempotent: request_id is unique)
        every few seconds   dead workers' journals (a journal writer's, ledgerjournal.py)
                             claimed and written, as a journal child does (ledgerclaim.py)
        while it runs, the switch interval at 0.5 ms (gilshare.py: else starved of the GIL)
        every few seconds the budgets' SpendBook is rebuilt from the rollups (every
        worker's spend; one SQL aggregate from the earliest period start on); the costs
        this worker held in memory for the records the book now has are let go then,
        whichever worker wrote them

The deque is bounded (`max_buffer`): past it, the oldest records go to the spool from
the event loop (their held costs wait for a book that has them, as they do while the
spool cannot take them and they wait in memory). `close()` (SIGTERM, via the app's
cleanup) writes or spools everything left; a reload asks for a flush. A database
failure is logged, never raised into a request.

The ledger is on when a `database` is configured (`ledger_enabled`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from azure_openai_proxy.gateway.gilshare import GilShare
from azure_openai_proxy.gateway.ledgerclaim import ThreadLedger, claim_dead_journals
from azure_openai_proxy.gateway.ledgerdatabase import LedgerDatabase
from azure_openai_proxy.gateway.ledgerrows import (
    NO_TOKENS,
    RELOADED,
    UNIT_PRICED,
    Queued,
    RowPricer,
    no_label,
    owner_costs,
    record_cost,
    usage_record,
)
from azure_openai_proxy.gateway.ledgerspool import LedgerSpool, RepeatedError
from azure_openai_proxy.governance.budget import (
    BudgetGuard,
)
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.ledger import (
    FULL_BATCH,
    PRUNE_CHUNK,
    LedgerRow,
    LedgerStore,
)
from azure_openai_proxy.store.replaced import FileWatch, file_identity
from azure_openai_proxy.store.sqlite import LockWaits, database_path

__all__ = [
    "NO_TOKENS",
    "UNIT_PRICED",
    "LedgerWriter",
    "deployment_models",
    "ledger_enabled",
    "open_ledger",
    "prices_of",
    "record_cost",
    "usage_record",
]

log = logging.getLogger("azure_openai_proxy")

_RETENTION_EVERY = 3600.0
# Other workers (and processes) write to the same database: their spend is read back
# at least this often, not only after this worker's own writes.
# Also the longest this worker holds a written record's cost in memory (BudgetGuard).
_BUDGET_REFRESH_EVERY = 2.0
# Dead workers' journals looked for (a directory listing) this often by a writer with no
# journal child (journalchild._CLAIM_EVERY's): a switch from `journal` to `thread`, or a
# journal writer that fell back or took over, leaves none unwritten.
_CLAIM_EVERY = 5.0



def ledger_enabled(settings: Settings) -> bool:
    """The ledger (and budgets) run with governance: a database or an admin key
    configured. Without either nothing is recorded and no file is made."""
    return settings.governance_enabled


def prices_of(settings: Settings) -> PriceTable:
    return PriceTable.shipped({name: p.model_dump() for name, p in settings.prices.items()})


def deployment_models(settings: Settings) -> dict[tuple[str, str], str]:
    """(endpoint, deployment name) -> the deployment's model name, for pricing."""
    return {(d.endpoint, d.deployment_name): d.model_name for d in settings.deployments}


# A batch: every 0.5 s or 2,000 records. Batches of 256 every 50 ms were measured and
# not kept: the writer thread's CPU per record rose ~1-2 µs under wrk (a wake-up, a
# commit and its WAL frames per 256 records), and the event loop's did not come down
# (bench/README.md, "The ledger's cost per request, measured again").
_BATCH = FULL_BATCH  # one INSERT of the store's
_INTERVAL = 0.5
# Records priced in one stretch: between two, the writer lets the GIL go (a batch of
# 2,000 priced at once would keep the event loop waiting for ~2 ms). The batch goes
# into the database whole: one INSERT of the store's for a full one.
_CHUNK = 256
# How long the writer stands back between chunks: time for a thread woken when it let
# the GIL go to take it (after a time.sleep(0) the writer can take it back first: without
# a switch request, which a waiting thread makes only after 5 ms, CPython hands it to no
# one in particular).
_PAUSE = 50e-6
# The rest of a cycle (the database file's identity, the spool's replay, retention, the
# budgets' book) at most this often, or when a flush asks: each is a system call or a
# statement, and each lets the GIL go and waits to have it back.
_MAINTAIN_EVERY = 0.5
# Records a request past the buffer's bound spools on the event loop, at most (~13 µs
# each: ~3 ms; all past half the bound at once, 50,000 and 100,000 kept, stalled it 7 s).
_OVERFLOW_MOST = 256


class LedgerWriter(LedgerDatabase):
    """One worker's ledger writer (a daemon thread). `add` is called on the event loop;
    everything else happens on the thread, or in `start`/`close` (call those off the
    loop: they touch the database)."""
    _opens_late = False  # opens its database at its start (the thread writer)

    def __init__(
        self, database: Path, prices: PriceTable, models: Mapping[tuple[str, str], str],
        guard: BudgetGuard, *, retention_days: int = 90, batch_size: int = _BATCH,
        interval: float = _INTERVAL, max_buffer: int = 100_000, busy_timeout_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.spool_path = database.with_name(database.name + ".spool.jsonl")
        self._spool_file = LedgerSpool(self.spool_path, max_buffer)
        self._unspooled = RepeatedError()  # the event loop's appends that failed
        self.guard = guard
        guard.prices, guard.models = prices, dict(models)
        self._pricer = RowPricer(prices, dict(models))
        self._retention = retention_days * 86400.0
        self._batch = batch_size
        self._interval = interval
        self._max = max_buffer
        self._busy_ms = busy_timeout_ms
        self._waits = LockWaits()  # its stores' one: each failure closes the store
        self._clock = clock
        self._queue: deque[Queued] = deque()
        self._reloads: deque[_Reconfigured] = deque()  # one per mark in the queue
        self._pricing = threading.Lock()  # held while a chunk is priced (`_take`)
        self._share = GilShare()  # its turns of the GIL while it runs (gilshare.py)
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Condition()
        self._begun = 0  # passes (`_cycle`) begun, for flush()
        self._written = 0  # passes done: the one numbered `_begun` once it is done
        self._thread: threading.Thread | None = None
        self._store: LedgerStore | None = None
        self._opened = self._opens_late and file_identity(database) is not None  # never made anew
        self._generation = 0  # stores opened: a row's label id is valid for one
        self._label_epoch = 0  # the open store's label_epoch the pricer's ids are of
        self._unlabelled = False  # a label id could not be had for this batch
        self._watch = FileWatch(database)  # the open one's file, its -wal (store/replaced.py)
        self._last_retention = 0.0
        self._maintained = -math.inf  # time.monotonic() of the last maintenance
        self._asked = False  # a flush, reload or stop wants the maintenance now
        self._day = 0.0, 0.0, ""  # the UTC day being written: its start, end and name
        self._last_refresh = 0.0
        # Records written since the book was last read: their held costs go with the next.
        self._unread: list[str] = []
        # Request ids whose records the event loop spooled (`_overflow`) with their costs
        # still held: handed to the thread, which releases each hold once a book read
        # from the database has its record, whoever replayed it.
        self._spooled: deque[str] = deque()
        self._awaiting: set[str] = set()
        self.failures = 0  # database errors seen (the tests and the log read it)
        self._claimer: ThreadLedger | None = None  # writes journals in this thread
        self._next_claim = 0.0  # time.monotonic() of the next look for dead journals

    # -- the event loop's side ---------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Records queued, not yet taken by the thread."""
        return len(self._queue)

    def add(self, record: RequestRecord) -> None:
        queue = self._queue
        queue.append((record, self._clock()))
        waiting = len(queue)
        if waiting >= self._batch:
            if waiting == self._batch:
                self._wake.set()  # once: the thread drains all there is when it wakes
            elif waiting > self._max:
                self._overflow()

    def reconfigure(self, prices: PriceTable, models: Mapping[tuple[str, str], str]) -> None:
        """A reload's prices and deployments, for the requests served after it (queued in
        order: the records already queued keep the prices they were served at); and a
        flush."""
        self._reloads.append(_Reconfigured(prices, dict(models)))  # before its mark
        self._queue.append(RELOADED)
        self.guard.prices, self.guard.models = prices, dict(models)
        self._asked = True
        self._wake.set()

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Open the database, load the budgets' spend, replay a spool left by an earlier
        run, and start the thread. A database that cannot be opened is retried later."""
        self._cycle()
        self._share.hold()  # let go by the thread as it ends (`_run`), or by `close`
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was queued before the call is written or spooled."""
        with self._idle:
            # A pass that begins after this call drains what was added before it: the
            # pass in progress (begun, not done) may have drained before the call.
            target = self._begun + 1
            self._asked = True
            self._wake.set()
            return self._idle.wait_for(lambda: self._written >= target or self._thread is None,
                                       timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write (or spool) every queued record, then stop the thread."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._cycle()  # anything added after the thread's last pass, rows kept
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.close()
                self._store = None
            self._watch.release()  # (not under a thread still running)
            if self._claimer is not None:
                self._claimer.close()
            self._share.release()  # a thread never started (or `start` failed)
        else:
            self._spool(self._take(len(self._queue)))
        self._spool_file.close()

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                self._cycle()
            self._cycle()
        finally:
            self._share.release()
        with self._idle:
            self._thread = None if self._stopping else self._thread
            self._idle.notify_all()

    def _cycle(self) -> None:
        with self._idle:
            self._begun += 1
            begun = self._begun
        try:
            self._drain()
            now = time.monotonic()
            if self._asked or self._stopping or now - self._maintained >= _MAINTAIN_EVERY:
                self._asked = False
                self._maintained = now
                self._maintain()
        except Exception:  # a bug of ours must not stop the ledger
            log.exception("ledger writer: unexpected error")
        with self._idle:
            self._written = begun
            self._idle.notify_all()

    def _take(self, count: int, *, labelled: bool = False, block: bool = True,
              ) -> list[LedgerRow]:
        """Up to `count` queued records as rows, in order, each priced as it was served
        (a reload's mark in the queue switches the prices). `labelled` (the writer's
        thread, or `close` once it has stopped): label ids asked of the open store, and
        the GIL let go between chunks of `_CHUNK` records. Each chunk holds the pricing
        lock: the event loop's overflow takes too, and a mark the other took between
        would switch the prices under a chunk (`block=False`: none taken unless it is
        free at once)."""
        queue = self._queue
        out: list[LedgerRow] = []
        label_of = self._label_of if labelled else no_label
        chunk = _CHUNK if labelled else count
        while queue and len(out) < count:
            if not self._pricing.acquire(block):
                break
            try:
                self._day, marked = self._pricer.take(queue, min(count - len(out), chunk),
                                                      out, self._day, label_of)
                if marked:  # its prices are the first waiting
                    reload = self._reloads.popleft()
                    self._pricer = RowPricer(reload.prices, reload.models)
            finally:
                self._pricing.release()
            if labelled and not marked and queue and len(out) < count:
                time.sleep(_PAUSE)  # lets the GIL go: the event loop waits at most a chunk
        return out

    def _drain(self) -> None:
        while self._queue:
            generation = self._generation
            self._unlabelled = False
            self._forget_stale_labels()
            batch = self._take(self._batch, labelled=True)
            if not self._write(batch, generation):
                self._spool(batch)
                self.guard.replace(self.guard.book.plus(owner_costs(batch)),
                                   [r[1] for r in batch])

    def _maintain(self) -> None:
        store = self._open()
        if store is None:
            return
        try:
            replayed = self._replay(store)
            now = self._clock()
            if now - self._last_retention >= _RETENTION_EVERY and store.delete_before(
                    now - self._retention, PRUNE_CHUNK) < PRUNE_CHUNK:  # else more next cycle
                self._last_retention = now
            if replayed or now - self._last_refresh >= _BUDGET_REFRESH_EVERY:
                self._refresh_budgets(store)
        except Exception as exc:
            self._failed(exc)
        self._claim_dead()

    def _own_journal(self) -> str | None:
        """This worker's journal prefix ("": none), or None: a child claims dead ones."""
        return ""

    def _claim_dead(self) -> None:
        own = self._own_journal()
        if (own is None or self._thread is None or self._stopping
                or time.monotonic() < self._next_claim):
            return  # (only the thread's: at the start or the stop, 1 GB would hold it up)
        claim_dead_journals(self.database, own, self._thread_ledger())
        self._next_claim = time.monotonic() + _CLAIM_EVERY

    def _thread_ledger(self) -> ThreadLedger:
        if self._claimer is None:
            self._claimer = ThreadLedger(self.database, self._busy_ms, self._count_failure)
        return self._claimer

    def _count_failure(self) -> None:
        self.failures += 1

    # -- the spool ---------------------------------------------------------------------

    def _overflow(self) -> None:
        # The thread is behind (a slow database): spool the oldest records now rather
        # than let the buffer grow without bound; on the event loop, a chunk at most and
        # none of the rows the spool keeps (the thread's). Never wait for the spool's lock
        # (a replay holds it); held, the next request past the bound tries again.
        count = min(len(self._queue) - self._max // 2, _OVERFLOW_MOST)
        taken = self._spool(self._queue, count, block=False)
        pending = self.guard.pending()
        if taken and pending:
            # Their costs stay held until the book has them: the writer's refresh.
            self._spooled.extend(r[1] for r in taken if r[1] in pending)

    def _spool(self, records: list[LedgerRow] | deque[Queued],
               count: int = 0, *, block: bool = True) -> list[LedgerRow]:
        """Append `records` to the spool; or, given the queue, `count` records taken from
        it once the lock is held (`block=False`: only if it is free at once). Returns
        the rows taken: written, or kept in memory by the spool when it cannot be (their
        holds wait as a written one's: let go, their costs were in no book until then)."""
        if not records:
            return []
        rows = records if isinstance(records, list) else (
            lambda: self._take(count, block=block))
        taken, problem = self._spool_file.append(rows, block=block, with_kept=block)
        if (problem is not None and not taken and not isinstance(records, list)
                and (times := self._unspooled.due())):
            log.error("usage ledger: cannot write the spool %s (%s): the %d oldest of %d "
                      "queued records stay in memory; the next request past the buffer's "
                      "bound tries again (%d such failures since the last line)",
                      self.spool_path, problem, count, len(records), times)
        return taken

class _Reconfigured(NamedTuple):
    """A reload's prices: the records queued after its mark are priced with these."""

    prices: PriceTable
    models: dict[tuple[str, str], str]


def open_ledger(settings: Settings, guard: BudgetGuard) -> LedgerWriter:
    """The writer for the governance database (store/sqlite.py database_path)."""
    writer = LedgerWriter
    if settings.ledger_writer == "journal":  # (imported here: it is a LedgerWriter)
        from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter as writer
    return writer(database_path(settings), prices_of(settings),
                        deployment_models(settings), guard,
                        retention_days=settings.ledger_retention_days)
