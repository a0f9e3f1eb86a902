"""The ledger journal's writer: a child process of one worker that tails the worker's
journal (journalfiles.py), prices its records (`RowPricer`) and writes them
(`LedgerStore.write_rows`), so that no thread of the worker prices or binds rows while
holding its GIL.

    python -m azure_openai_proxy.gateway.journalchild PREFIX DATABASE BUSY_MS LOCK_FD

It runs until its standard input ends (the worker closed it at `close`, or died), then
writes what is left and removes the journal. Progress is acknowledged after each
committed batch (`<prefix>.ack`): a child started again (after a crash) resumes there,
and a batch committed but not acknowledged is written again, counted once (INSERT OR
IGNORE). While the database refuses (locked, unwritable, gone), the journal is the
spool: the child retries every second. Every few seconds it claims the journals of dead
workers (their lock files free) and writes them the same way.

Each database failure is one byte on its standard output, counted by the worker. It
ignores SIGINT and SIGTERM: a terminal's ^C or a stop of the process group reaches
the worker, whose `close` ends it in order (its input closed).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import select
import signal
import sqlite3
import sys
import time
from collections import deque
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.journalfiles import (
    Position,
    dead_journals,
    prices_of_line,
    read_ack,
    record_line,
    remove_journal,
    segment_path,
    segments,
    write_ack,
)
from azure_openai_proxy.gateway.ledgerrows import JournalRecord, Queued, RowPricer, request_record
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.store.ledger import FULL_BATCH, LedgerRow, LedgerStore
from azure_openai_proxy.store.replaced import FileWatch
from azure_openai_proxy.store.sqlite import LockWaits

__all__ = ["JournalReader", "claim_dead_journals", "main", "quiet_collector"]

log = logging.getLogger("azure_openai_proxy")

PROGRESS, IDLE, DONE = 0, 1, 2  # JournalReader.step's answers
# How often the journal is looked at without a poke. The worker pokes after each of its
# thread's appends (every 0.5 s) and at a flush: a batch a poke, as the thread writer's
# every 0.5 s. (Polled every 50 ms at 3,000 records/s: 13.3 µs of the child's CPU a
# record in two runs, against 8.3 and 7.5 with the pokes alone; bench/README.md.)
_POLL = 1.0
_RETRY = 1.0  # after a database error
_CLAIM_EVERY = 5.0
_READ = 1 << 22
# After the worker is gone, the database refusing this long: the child leaves the rest
# in the journal for the next start (or another worker's child) to claim.
_GIVE_UP = 60.0
_REFUSED_MOST = 10 << 20  # bytes of refused lines kept beside the database


class DatabaseRefused(Exception):
    """The database would not take a batch now (retried later)."""


class Ledger:
    """The database, opened when needed, never made anew once gone (the worker made it
    at its start: one missing now was removed, and an empty one would stand in for it)."""

    def __init__(self, database: Path, busy_ms: int) -> None:
        self.database = database
        self._busy_ms = busy_ms
        self._waits = LockWaits()  # its stores' one: each failure closes the store
        self._store: LedgerStore | None = None
        # The file opened and its -wal held, as the thread writer's (store/replaced.py):
        # a file moved in beside the replaced one's -wal is refused even where that
        # -wal keeps no mark (a file system without user extended attributes).
        self._watch = FileWatch(database)
        self.failures = 0

    def write(self, pricer: RowPricer, records: deque[Queued],
              days: tuple[float, float, str]) -> tuple[float, float, str]:
        """Price and write `records` (emptied): the day of the last, as the pricer keeps it.
        Raises DatabaseRefused, the records then to be written again."""
        store = self._open()
        rows: list[LedgerRow] = []
        try:
            days, _ = pricer.take(records, len(records), rows, days, store.label_id)
            store.write_rows(rows, priced=True)
        except Exception as exc:
            pricer.forget_labels()
            # The database's state (locked, read-only, gone, not a database): retried.
            # Anything else is the records' (a value it cannot take): `JournalReader`
            # sets the one at fault aside.
            if isinstance(exc, sqlite3.OperationalError | OSError) or (
                    type(exc) is sqlite3.DatabaseError):
                self._failed(exc)
                raise DatabaseRefused from exc
            self.close()  # its transaction rolled back; opened anew for the next
            raise
        return days

    def _open(self) -> LedgerStore:
        try:
            os.stat(self.database)  # gone: refused, never made anew here
        except OSError as exc:
            self._failed(exc)
            raise DatabaseRefused from exc
        if self._store is not None and self._watch.replaced():
            self.close()  # replaced under it: what it wrote would go to the old file
        if self._store is None:
            try:
                self._watch.check()  # ReplacedInUse while the old file's -wal is beside
                self._watch.opening()
                self._store = LedgerStore.open(self.database, busy_timeout_ms=self._busy_ms,
                                               waits=self._waits)
                self._watch.opened()
            except Exception as exc:
                self._failed(exc)
                raise DatabaseRefused from exc
        return self._store

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        # One byte on the standard output a failure: the worker counts them in its
        # writer's `failures` (operators see the child's as the thread writer's). Never
        # waits: a worker gone or not reading costs the count, not the journal.
        with contextlib.suppress(OSError):
            os.write(1, b"!")
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("usage ledger (journal writer): database unavailable (%s: %s); the "
                        "records wait in the journal until it is back", type(exc).__name__, exc)
        self.close()

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None


class JournalReader:
    """One journal (its prefix), read from its acknowledged position: the prices in
    force there found by reading its segment's prices lines up to it."""

    def __init__(self, prefix: str, ledger: Ledger) -> None:
        self.prefix = prefix
        self._ledger = ledger
        number, offset = read_ack(prefix)
        on_disk = segments(prefix)
        if on_disk and number < on_disk[0]:
            number, offset = on_disk[0], 0
        self.position: Position = (max(number, 1), offset)
        self._pricer: RowPricer | None = None
        self._prices_line = b""
        self._days = -1e308, -1e308, ""
        self._prices_before(self.position)

    def _prices_before(self, position: Position) -> None:
        number, offset = position
        try:
            with open(segment_path(self.prefix, number), "rb") as file:
                head = file.read(offset)
        except OSError:
            return
        for line in head.split(b"\n"):
            if line.startswith(b"{"):
                self._switch(line)

    def _switch(self, line: bytes) -> None:
        if line == self._prices_line:
            return  # a new segment's first line, the same prices: the pricer's memory kept
        self._prices_line = line
        try:
            prices, models = prices_of_line(orjson.loads(line))
        except Exception:
            log.error("usage ledger journal %s: a prices line could not be read; the "
                      "shipped prices apply", self.prefix)
            prices, models = PriceTable.shipped(), {}
        self._pricer = RowPricer(prices, models)

    def step(self, finished: bool) -> int:
        """Write what the journal has past the acknowledged position: PROGRESS (more is
        there: step again), IDLE (nothing more known) or DONE (`finished`: its worker writes no
        more, and it is all written; a segment's cut last line is then dropped). Raises
        DatabaseRefused."""
        number, offset = self.position
        path = segment_path(self.prefix, number)
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                data = file.read(_READ)
        except FileNotFoundError:
            data = b""
        cut = data.rfind(b"\n") + 1
        if cut:
            self._write(data[:cut], number, offset)
            # More now only if the read stopped short of it: what arrived while this was
            # written waits for the next poke (a batch a poke, not one per append)
            return PROGRESS if len(data) == _READ else IDLE
        # The worker numbers its segments one after the other: one look, not a listing.
        # A file there is one it made, so done with this one (a name it could not make
        # a file at, with something else there, is not).
        later = segment_path(self.prefix, number + 1).is_file()
        if later or finished:
            if data:
                log.error("usage ledger journal %s: a line cut by a crash was dropped (%d "
                          "bytes)", path, len(data))
            if later:
                # Complete: the worker opens a new segment only after its last write here.
                self.position = number + 1, 0
                write_ack(self.prefix, self.position)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return PROGRESS
            return DONE
        return IDLE

    def _write(self, data: bytes, number: int, offset: int) -> None:
        records: deque[Queued] = deque()
        done = offset  # acknowledged so far
        at = offset
        loads, make = orjson.loads, JournalRecord.of_values
        for line in data.split(b"\n")[:-1]:
            end = at + len(line) + 1
            if line.startswith(b"{"):
                self._flush(records, number, done, at)
                done = at
                self._switch(line)
            elif line:
                try:  # (`record_of_line`'s values, without its RequestRecord: JournalRecord)
                    record = make(loads(line))
                    records.append((record, float(record.ended)))
                except Exception as exc:
                    self._refuse(line, exc)
                if len(records) >= FULL_BATCH:
                    self._flush(records, number, done, end)
                    done = end
            at = end
        self._flush(records, number, done, at)

    def _flush(self, records: deque[Queued], number: int, done: int, end: int) -> None:
        if records:
            pricer = self._pricer or RowPricer(PriceTable.shipped(), {})
            self._pricer = pricer
            batch = list(records)
            try:
                self._days = self._ledger.write(pricer, records, self._days)
            except DatabaseRefused:
                raise
            except Exception:
                for one in batch:  # one at a time: the rest are written
                    try:
                        self._days = self._ledger.write(pricer, deque([one]), self._days)
                    except DatabaseRefused:
                        raise
                    except Exception as exc:
                        if one[0] is not None:  # (never a mark: lines of prices split)
                            self._refuse(record_line(request_record(one[0]), one[1]), exc)
        if end != done:
            self.position = number, end
            write_ack(self.prefix, self.position)

    def _refuse(self, line: bytes, exc: Exception) -> None:
        """A line that reads as no record, or whose record neither prices nor writes
        whatever the database's state: set aside (it must not stop the journal)."""
        database = self._ledger.database
        refused = database.with_name(database.name + ".journal-refused.jsonl")
        log.error("usage ledger journal %s: a line refused (%s: %s), set aside in %s",
                  self.prefix, type(exc).__name__, exc, refused)
        with contextlib.suppress(OSError):
            if not refused.exists() or refused.stat().st_size < _REFUSED_MOST:
                with open(refused, "ab") as file:
                    file.write(line.rstrip(b"\n") + b"\n")

    def remove(self) -> None:
        """The journal written whole: its files go (under its lock, held by the caller)."""
        remove_journal(self.prefix)


def claim_dead_journals(database: Path, own: str, ledger: Ledger) -> None:
    """Write and remove the journals of dead workers (their lock free; `own`: this
    worker's journal prefix, or ""), as a child does every few seconds (and a worker
    running none: ledgerclaim.py)."""
    for prefix in dead_journals(database, own):
        try:
            fd = os.open(prefix + ".lock", os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(prefix + ".lock").st_ino:
                continue  # removed by its claimer between our open and lock
            reader = JournalReader(prefix, ledger)
            while reader.step(finished=True) != DONE:
                pass
            log.info("usage ledger: a stopped worker's journal %s written", prefix)
            reader.remove()
        except (OSError, DatabaseRefused):
            continue  # alive (locked), or the database refused: another time
        finally:
            os.close(fd)


def run(prefix: str, database: Path, busy_ms: int) -> int:
    ledger = Ledger(database, busy_ms)
    reader = JournalReader(prefix, ledger)
    finished = False
    refused_since: float | None = None
    next_claim = 0.0
    while True:
        if not finished:
            ready, _, _ = select.select([0], [], [], _POLL)
            if ready and not os.read(0, 4096):
                finished = True  # the worker closed its end, or died
        try:
            state = PROGRESS
            while state == PROGRESS:
                state = reader.step(finished)
            refused_since = None
        except DatabaseRefused:
            now = time.monotonic()
            refused_since = refused_since or now
            if finished and now - refused_since > _GIVE_UP:
                log.error("usage ledger: the database refused for %.0f s after the worker "
                          "stopped; the journal %s stays for the next start", _GIVE_UP, prefix)
                return 1
            time.sleep(_RETRY)
            continue
        if state == DONE:
            reader.remove()
            ledger.close()
            return 0
        if time.monotonic() >= next_claim:
            claim_dead_journals(database, prefix, ledger)
            next_claim = time.monotonic() + _CLAIM_EVERY


def quiet_collector() -> None:
    """The cyclic collector run rarely: a batch's objects (up to 2,000 records' tuples and
    usage dicts, ~12,000 containers) are freed by their counts once it is written, and no
    record makes a cycle; at the default threshold (700 net allocations) 20,000 records
    took 130 young and 12 older collections, each batch scanned ~13 times
    (bench/README.md, session 31). Cycles (a traceback's) are still collected, once
    50,000 containers outlive their counts. What the start-up made is left out of every
    scan (`gc.freeze`)."""
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def main(argv: list[str]) -> int:
    quiet_collector()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prefix, database, busy_ms, lock_fd = argv
    os.set_blocking(1, False)  # the failures' bytes (`Ledger._failed`)
    del lock_fd  # held open (inherited): the journal stays locked while this process lives
    return run(prefix, Path(database), int(busy_ms))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
