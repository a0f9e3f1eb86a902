"""The usage ledger written by a child process fed by a journal file (settings
`ledger_writer: journal`): the worker's thread writer (ledger.py) with its pricing and
writing moved out of the worker's GIL.

    event loop: add(record) -> one orjson line (journalfiles.py), kept in a deque;
                               every 256, appended to the journal (one write(2))
    worker's thread, every 0.5 s: the lines left appended (the last records of a quiet
                               gateway reach the journal within 0.5 s and the database
                               ~50 ms later); the child restarted if it died; the
                               journal's size checked against its bound; and as before
                               (ledger.py) the budgets' book, retention and the old
                               spool's replay
    child (journalchild.py):   tails the journal, prices, writes, acknowledges, removes
                               the segments written; claims dead workers' journals

Nothing lost: a line appended is in the page cache, so SIGTERM, a crash of the worker
(its journal claimed by the next child to look: its lock is free) and a crash of the
child (restarted; it resumes at its acknowledgement) lose at most the lines not yet
appended (a SIGKILL of the worker: up to 0.5 s of records; SIGTERM and a reload lose
none). A child dying `_CRASH_LOOP` times in a row with records waiting hands over
(ledgersupervise.py): the worker's thread reads and writes the journal as the child did
(`_take_over`, ledgerclaim.py: a bounded piece at a time, acknowledged after each commit;
the lines still appended to the journal, which stays until they are written), claims
dead workers' journals as the child did, and tries a child again later. At `close` the
thread does the same with up to `_HAND_OVER_MOST` bytes of journal left; past that, the
child writes the rest (its input closed; a database refusing past the wait leaves it for
the next start).

The bound: past `journal_max_bytes` on disk (the database refusing for long) the lines
wait in memory, up to `max_buffer`; past that the oldest are dropped, with an error
logged and their budget holds let go. A disk that refuses the append does the same.

The budgets: a record's held cost (BudgetGuard) is let go once a book read from the
database has the record: at each refresh, the ids held are asked of the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import secrets
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.journalchild import JournalReader
from azure_openai_proxy.gateway.journalfiles import (
    Position,
    drop_oldest,
    journal_size,
    prices_line,
    prices_of_line,
    read_ack,
    remove_journal,
    segment_path,
)
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.gateway.ledgerclaim import read_journal
from azure_openai_proxy.gateway.ledgerrows import JournalRecord
from azure_openai_proxy.gateway.ledgersupervise import ChildSupervision
from azure_openai_proxy.governance.budget import BudgetGuard, SpendBook, earliest_period_start
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerStore

__all__ = ["JournalLedgerWriter"]

log = logging.getLogger("azure_openai_proxy")

_APPEND_EVERY = 256  # lines: one write(2) on the event loop
_SEGMENT_BYTES = 16 << 20
_JOURNAL_MAX_BYTES = 1 << 30
_HAND_OVER_MOST = 8 << 20  # bytes of journal the worker writes itself at its stop


class JournalLedgerWriter(ChildSupervision, LedgerWriter):
    """`LedgerWriter` whose records go through a journal to a child process."""
    _opens_late = True  # its worker side opens the database for maintenance only
    def __init__(self, database: Path, prices: PriceTable,
                 models: Mapping[tuple[str, str], str], guard: BudgetGuard, *,
                 segment_bytes: int = _SEGMENT_BYTES,
                 journal_max_bytes: int = _JOURNAL_MAX_BYTES, **options: object) -> None:
        super().__init__(database, prices, models, guard, **options)  # type: ignore[arg-type]
        self._lines: deque[bytes] = deque()
        self._append = self._lines.append
        self._dumps = orjson.dumps
        # Held by whoever appends (the event loop, without waiting; the thread; close):
        # the lines go to the file in the order they were added.
        self._io = threading.RLock()
        self._prices = prices_line(prices, models)
        self._segment_bytes = segment_bytes
        self._max_bytes = journal_max_bytes
        self.journal_full = False  # past its bound: lines wait in memory
        self._torn = False  # an append failed part way: the next begins a line
        self.prefix = ""
        self._fd = -1
        self._lock_fd = -1
        self._number = 0
        self._size = 0
        self._child: subprocess.Popen[bytes] | None = None
        self.restarts = self.fallbacks = 0  # (these and `in_process`: the metrics read them)
        self._restart_at = 0.0
        self._deaths = 0  # in a row, the acknowledgement not moving (`_CRASH_LOOP`)
        self._ack_seen: Position = (0, 0)
        self._retry_at = math.inf  # (taken over) when a child is tried again
        self._takeovers = 0
        self._reader: JournalReader | None = None  # the thread's, taken over
        self.in_process = False  # this worker's thread writes (`_fall_back`, `_take_over`)
        self._book_due = False  # a flush asks for the budgets' book to be read
        self.dropped = 0  # lines dropped past the bound (the tests and the log read it)
        self._fell_back = False  # the thread writer's from `start` on (`_fall_back`)

    # -- the event loop's side -----------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Lines not yet appended to the journal."""
        return len(self._lines)

    def add(self, record: RequestRecord) -> None:
        lines = self._lines
        self._append(self._dumps((
            record.request_id, self._clock(), record.total_ms, record.upstream_ms,
            record.status, record.attempts, record.stream, record.key_id, record.team_id,
            record.model, record.deployment, record.endpoint, record.route, record.usage)))
        if len(lines) >= _APPEND_EVERY:
            self._write_lines(block=False)

    def reconfigure(self, prices: PriceTable, models: Mapping[tuple[str, str], str]) -> None:
        """A reload's prices, journalled in order: the records after them are priced with
        them; and a flush of the lines."""
        line = prices_line(prices, models)
        self._prices = line  # the first line of the segments made from now on
        self._append(line)
        self.guard.prices, self.guard.models = prices, dict(models)
        self._asked = True
        self._wake.set()

    # -- appending ---------------------------------------------------------------------

    def _write_lines(self, *, block: bool) -> Position | None:
        """Append the lines waiting; where the journal ends after, or None (the lock held
        elsewhere, or no journal open)."""
        if not self._io.acquire(block):
            return None
        try:
            if self._fd < 0:
                return None
            lines = self._lines
            count = len(lines)
            if count and not self.journal_full:
                pop = lines.popleft
                batch = [pop() for _ in range(count)]
                data = b"\n".join(batch) + b"\n"
                if self._torn:
                    data = b"\n" + data
                if not self._append_bytes(data):
                    lines.extendleft(reversed(batch))  # in order, before those added since
                elif self._size >= self._segment_bytes:
                    self._next_segment()
            return self._number, self._size
        finally:
            self._io.release()

    def _append_bytes(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as exc:
            self._torn = len(view) != len(data) or self._torn
            if self._unspooled.due():
                log.error("usage ledger: cannot append to the journal %s (%s); the records "
                          "wait in memory", segment_path(self.prefix, self._number), exc)
            return False
        self._torn = False
        return True

    def _next_segment(self) -> None:
        """The next segment, its first line the prices in force. One that cannot be made
        (on the event loop too: never raised into a request) leaves the lines going to
        the current one, tried again at the next append."""
        path = segment_path(self.prefix, self._number + 1)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if self._fd < 0:
                raise  # the first, at start
            if self._unspooled.due():
                log.error("usage ledger: cannot make the journal's next segment %s (%s)",
                          path, exc)
            return
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._number, self._size = fd, self._number + 1, 0
        self._append_bytes(self._prices + b"\n")

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """The journal (its lock held) and the child, then the thread writer's start. A
        journal that cannot be made, or a child that cannot be started, falls back to
        the thread writer for this run (an error logged): never a gateway that does not
        start, nor records that wait for a child that never comes."""
        self.prefix = f"{self.database}.journal-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            # Locked before it has its name: a child claiming dead workers' journals (their
            # locks free) never finds this one made and not yet locked.
            lock = self.prefix + ".lock"
            self._lock_fd = os.open(lock + ".new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            os.rename(lock + ".new", lock)
            with self._io:
                self._next_segment()
            self._spawn()  # (its database opened when it has rows: by then it is made)
        except OSError as exc:
            log.error("usage ledger: ledger_writer: journal falls back to the thread writer "
                      "for this run: the journal %s or its writer could not be made (%s)",
                      self.prefix, exc)
            self._fall_back()
            LedgerWriter.start(self)
            return
        super().start()

    def _fall_back(self) -> None:
        """Become the thread writer: the journal's files go (nothing is in them yet), and
        the lines added before the start (records, a reload's prices) are queued in order."""
        self._stop_child()  # (started, then its pipes could not be set up)
        self._close_journal()
        if self._lock_fd >= 0:  # (else nothing was made)
            remove_journal(self.prefix)
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._fell_back = self.in_process = True
        self.fallbacks += 1
        # The thread writer's methods from now on, `add` too, at no cost a call (not a flag
        # tested on the event loop's path): its state is set (`LedgerWriter.__init__`).
        self._queue_lines()
        self.__class__ = LedgerWriter  # type: ignore[assignment]

    def _queue_lines(self) -> None:
        """The lines waiting, as the thread writer's queue: records, and a reload's prices
        as its marks, in order (a line a crash cut is left out). A record as the child
        reads it (`JournalRecord`, which the pricer takes as it takes a `RequestRecord`)."""
        pop, make = self._lines.popleft, JournalRecord.of_values
        for _ in range(len(self._lines)):
            line = pop()
            try:
                values = orjson.loads(line)
                if line.startswith(b"{"):
                    LedgerWriter.reconfigure(self, *prices_of_line(values))
                else:
                    record = make(values)
                    self._queue.append((record, float(record.ended)))
            except Exception as exc:  # (a line cut by a failed append)
                if line:
                    log.error("usage ledger: a journal line dropped (%s)", type(exc).__name__)

    def _take_over(self) -> None:
        """(The thread, the child dead or stopped.) The thread reads the journal from its
        acknowledgement on, as the child did (those the child wrote and did not
        acknowledge: again, counted once by INSERT OR IGNORE), a piece at a time; the
        lines still appended to it."""
        self._reader = JournalReader(self.prefix, self._thread_ledger())
        self.in_process = True

    def _read_journal(self, *, finished: bool = False) -> None:
        """(Taken over.) What the journal has, written; `finished` (`close`, nothing
        appended any more), all of it: it goes."""
        reader = self._reader
        if reader is None:
            return
        try:
            done = read_journal(reader, finished=finished)
        except OSError as exc:  # (the journal or its acknowledgement: the disk's)
            if self._unspooled.due():
                log.error("usage ledger: the journal %s could not be read or acknowledged "
                          "(%s); it stays until it can", self.prefix, exc)
            return
        if done:
            reader.remove()
            self._reader = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _give_back(self) -> None:
        """(Taken over, time to try a child again.) The child resumes at the acknowledgement."""
        self._reader = None
        self.in_process = False
        if self._claimer is not None:
            self._claimer.close()

    def _close_journal(self) -> None:
        with self._io:  # (reentrant)
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was added before the call is in the database, then for a
        maintenance pass (the budgets' book)."""
        deadline = time.monotonic() + timeout
        target = self._write_lines(block=True)
        if target is None:
            return super().flush(timeout)
        if self.journal_full and self._lines:
            return False  # past the bound: lines kept in memory, not in the journal
        self._poke()
        if self.in_process:
            self._wake.set()  # (taken over: the thread reads it)
        while read_ack(self.prefix) < target:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        # The thread's own timer may have read the book between the append and the
        # child's commit: the pass a flush asks for reads it again (as the thread
        # writer's flush, whose pass writes and then reads).
        self._book_due = True
        return super().flush(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread, append the rest, and let the child write it all (its input
        closed; taken over: read to its end here); past `timeout` the child is stopped
        and the journal kept."""
        deadline = time.monotonic() + timeout
        if not self.prefix and self._lines:
            self.start()  # never started (a test's, a command's): the records still go
            if self._fell_back:  # now a LedgerWriter: this method's super() would raise
                LedgerWriter.close(self, timeout)
                return
        super().close(timeout)
        self.journal_full = False  # past the bound or not, on disk rather than lost with memory
        self._write_lines(block=True)
        self._close_journal()
        if self.in_process and self._thread is None:
            # Taken over, the thread ended: the journal read to its end, what was added
            # after the thread's last pass too (a request finishing during the stop).
            self._read_journal(finished=True)
            if self._claimer is not None:
                self._claimer.close()
        child = self._child
        if (self._lock_fd >= 0 and not self.in_process  # (taken over: left if kept)
                and (child is None or child.poll() is not None)):
            # Died (or never started), not started again by the thread: one now, or the
            # journal waits for a next start that may never come.
            self._ended(child)
            with contextlib.suppress(OSError):
                self._spawn()
            child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                if child.stdin is not None:
                    child.stdin.close()
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("usage ledger: the journal %s was not all written at the stop; it "
                          "is written at the next start", self.prefix)
                child.kill()
                child.wait()
            self._count_failures()
            if child.stdout is not None:
                child.stdout.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- the thread ----------------------------------------------------------------------

    def _drain(self) -> None:
        """(The thread, every cycle.) The lines left, appended; the child (or, taken over,
        the thread's reading) and the bound looked after."""
        if not self._stopping and not self.in_process:
            self._supervise()  # (a crash loop: the journal taken over)
        elif (self._stopping and not self.in_process and self._lock_fd >= 0
              and self.journal_bytes() <= _HAND_OVER_MOST):
            self._stop_child()
            self._take_over()
        if self._stopping:
            self.journal_full = False  # (as `close`: on disk rather than lost with memory)
            self._write_lines(block=True)
            if self.in_process:
                self._read_journal()  # (the rest, and the journal's removal: `close`)
            return
        size = self.journal_bytes()
        if size >= self._max_bytes and not self.journal_full:
            log.error("usage ledger: the journal %s reached its bound (%d bytes: the "
                      "database refuses); records wait in memory", self.prefix, size)
        self.journal_full = size >= self._max_bytes
        self._write_lines(block=True)
        if not self.in_process:
            self._poke()
        elif self._reader is not None:
            self._read_journal()
            if self._retried():
                self._give_back()
        excess = len(self._lines) - self._max
        if excess > 0:
            self._drop(excess)

    def _own_journal(self) -> str | None:
        return self.prefix if self.in_process else None  # (else its child claims them)

    def journal_bytes(self) -> int:  # (its segments not yet removed)
        return journal_size(self.prefix)

    def _drop(self, count: int) -> None:
        ids = drop_oldest(self._lines, count)
        self.dropped += len(ids)
        self.guard.release(ids)  # never in any book
        log.error("usage ledger: %d records dropped: the journal is at its bound and "
                  "memory at max_buffer", len(ids))

    def _maintain(self) -> None:
        if self._book_due:
            self._book_due = False
            self._last_refresh = -math.inf
        super()._maintain()

    def _refresh_budgets(self, store: LedgerStore) -> None:
        """Every worker's spend, and the holds let go of the records the book has."""
        with contextlib.suppress(Exception):
            held = list(self.guard.pending())
            since = earliest_period_start(self._clock())
            read_at = self.guard.book_read_started()
            rows, recorded = store.spend_and_recorded(since, held)
            self.guard.replace(SpendBook.from_rows(rows), recorded, read_at)
            self._unread = []  # (written in process: every held id was asked)
            self._last_refresh = self._clock()
