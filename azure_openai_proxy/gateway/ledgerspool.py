"""The usage ledger's spool: a file of JSON lines next to the database, one
`UsageRecord` a line, where the writer puts the rows the database would not take, and
from which they are replayed once it is back (idempotent: request_id is unique).

Every worker of a database shares its spool: an append and a replay each hold the
file's lock (`flock`) for their whole work, and a replay removes the file while it holds
it, so an append that waited for it opens the new one. A line cut by a crash (or
damaged) is skipped, kept in `<spool>.refused` (bounded) with a warning; the rest still
counts (an append after it starts a line of its own). A record the
database refuses whatever its state (a value it cannot store or sum) is set aside in
`<spool>.refused` with an error logged, so that it does not stop the replay, nor the
retention and budgets' refresh that follow it.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import orjson

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.governance.prices import MAX_TOKENS
from azure_openai_proxy.store.ledger import LedgerRow, LedgerStore, record_of, row_of

__all__ = ["LedgerSpool", "RepeatedError"]

log = logging.getLogger("azure_openai_proxy")

# An error that repeats while the disk stays full (every request past the buffer's
# bound, every chunk of 256 of them) is said at most once in this many seconds.
_SAY_EVERY = 10.0


class RepeatedError:
    """An error worth a line at most once every `every` seconds of `clock`, with the
    count since the last line (the first is said at once)."""

    def __init__(self, every: float = _SAY_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._said = -math.inf
        self.unsaid = 0  # counted since the last line

    def due(self, count: int = 1) -> int:
        """Count `count` more: the count to say now, or 0 (not yet)."""
        self.unsaid += count
        now = self._clock()
        if now < self._said + self._every:
            return 0
        self._said, said, self.unsaid = now, self.unsaid, 0
        return said


class LedgerSpool:
    """The spool file of the ledger at `path` (the database's name plus
    `.spool.jsonl`), and the rows that could not be written to it (a disk full: the
    database beside it failed too), kept in memory, at most `most` (the oldest go past
    it, with an error logged): they go into the spool with the next append it takes,
    or into the database with the next replay."""

    def __init__(self, path: Path, most: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._most = most
        self._lost = RepeatedError(clock=clock)  # rows pushed out of memory (under the lock)
        # Kept and taken by the event loop and the writer's thread: under the lock (a
        # take of one popleft at a time met another's and raised IndexError, the rows
        # it had taken lost, into a request when on the event loop)
        self._kept: deque[LedgerRow] = deque(maxlen=most)  # past it, the oldest go
        self._kept_lock = threading.Lock()
        self._unreadable = False  # the spool could not be opened by the last replay

    @property
    def _refused_path(self) -> Path:
        """`<spool>.refused`: the records the database refuses and the damaged lines."""
        return self.path.with_name(self.path.name + ".refused")

    @property
    def kept(self) -> int:
        """Rows waiting in memory."""
        return len(self._kept)

    def append(self, rows: list[LedgerRow] | Callable[[], list[LedgerRow]], *,
               block: bool = True, with_kept: bool = True,
               ) -> tuple[list[LedgerRow], str | None]:
        """Append `rows`, or those `rows()` takes once the lock is held (`block=False`:
        only if it is free at once), after the rows kept (`with_kept`; the event loop's
        appends leave them to the thread's): the rows written and None;
        nothing written and None when the lock was busy; or, when the file cannot be
        written, the rows taken (kept in memory) and why."""
        taken: list[LedgerRow] = []
        kept: list[LedgerRow] = []
        for _ in range(3):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a+b") as spool:
                    try:
                        fcntl.flock(spool, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return [], None  # a replay holds it: the records stay queued
                    status = os.fstat(spool.fileno())
                    if status.st_nlink == 0:
                        continue  # replayed and removed while we waited: open it again
                    taken = rows if isinstance(rows, list) else rows()
                    kept = self._take_kept() if with_kept else []
                    spool.write(_cut_line_ended(spool.fileno(), status.st_size)
                                + _lines((*kept, *taken)))
                return taken, None
            except OSError as exc:
                # Kept whole, even if some lines went in before the error: the database
                # takes a record once, however often it is replayed.
                # Rows given (not to be taken) are kept even if the file did not open.
                problem = str(exc.strerror or exc)
                taken = taken or (rows if isinstance(rows, list) else [])
                self._keep([*kept, *taken], problem)
                return taken, problem
        # Replayed and removed each time it was waited for (replays back to back):
        # rows given are kept, as when the file cannot be written; rows to be taken
        # were not, and stay queued.
        if not isinstance(rows, list) or not rows:
            return [], None
        problem = "replayed and removed again and again while waiting for its lock"
        log.error("usage ledger: the spool %s was %s: %d records wait in memory",
                  self.path, problem, len(rows))
        self._keep(rows)
        return rows, problem

    def _take_kept(self) -> list[LedgerRow]:
        kept = self._kept
        with self._kept_lock:
            taken = list(kept)
            kept.clear()
        return taken

    def _keep(self, rows: list[LedgerRow], problem: str | None = None) -> None:
        """Keep `rows` in memory (`problem`: why the spool did not take them, logged when
        they are the first to wait)."""
        # Their label ids let go (as a spooled line has none): the database they are
        # written to may be another file by then (restored), whose ids name others.
        unlabelled = [(*row[:2], 0, *row[3:]) if row[2] else row for row in rows]
        kept = self._kept
        with self._kept_lock:
            waiting = len(kept)
            kept.extend(unlabelled)
            lost = waiting + len(unlabelled) - self._most
            said = self._lost.due(lost) if lost > 0 else 0
        if said:
            log.error("usage ledger: neither the database nor the spool %s takes records: "
                      "%d of the oldest of those waiting in memory lost since the last "
                      "such line", self.path, said)
        elif problem is not None and not waiting and rows:
            log.error("usage ledger: cannot write the spool %s (%s): records wait in memory "
                      "(%d at most) until the database or the spool takes them", self.path,
                      problem, self._most)

    def close(self) -> None:
        """At exit: the rows still kept go to the spool if it takes them now (room again,
        the database still failing), else they are lost; say so."""
        if self._kept:
            self.append([])
        if self._lost.unsaid:
            log.error("usage ledger: %d more of the oldest records waiting in memory "
                      "were lost before exit", self._lost.unsaid)
        if self._kept:
            log.error("usage ledger: %d records neither the database nor the spool %s "
                      "took are lost at exit", len(self._take_kept()), self.path)

    def replay(self, store: LedgerStore, batch: int) -> int | None:
        """Write the rows kept in memory and the spool's rows to `store`, `batch` at a
        time, then remove it: how many (None: none kept, and there was no spool). A
        database error is raised: the spool stays, and so do the rows kept. The
        file is read a batch at a time: a long outage's spool (millions of lines, ~800
        bytes of Python objects each once read) must not have to fit in memory."""
        kept = self._take_kept()
        try:
            done, refused = _write_all(store, (kept[i:i + batch]
                                               for i in range(0, len(kept), batch)))
        except BaseException:
            self._keep(kept)
            raise
        if refused:
            try:
                self._set_aside(refused)
            except OSError as exc:
                log.error("usage ledger: %d records the database refuses are lost (%s)",
                          len(refused), exc.strerror or exc)
        done -= len(refused)
        try:
            spool = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return done or None
        except OSError as exc:
            # A directory there, no permission: said once, and the writer's cycle goes
            # on (raised, it was a database failure every cycle: the budgets' refresh
            # never ran, and the ids it lets go piled up in memory).
            if not self._unreadable:
                log.warning("usage ledger: the spool %s cannot be read (%s): it is not "
                            "replayed until it can be", self.path, exc.strerror or exc)
            self._unreadable = True
            return done or None
        self._unreadable = False
        with spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            if os.fstat(spool.fileno()).st_nlink == 0:
                return done or None
            # a database error raises: the spool stays
            damaged = _Damaged()
            written, refused = _write_all(store, _batches(spool, batch, damaged))
            if refused:
                self._set_aside(refused)  # raises OSError: the spool stays
            if damaged.count:
                self._keep_damaged(damaged)
            self.path.unlink()
        return done + written - len(refused)

    def _keep_damaged(self, damaged: _Damaged) -> None:
        """Lines that read as no record (cut by a crash, damaged): the first of them
        kept beside the spool for the operator, with one warning."""
        refused = self._refused_path
        try:
            with open(refused, "ab") as file:
                file.write(b"".join(damaged.lines))
        except OSError as exc:
            log.warning("usage ledger: %d spool lines were no record (a line cut by a "
                        "crash, or damaged) and are skipped; they could not be kept in %s "
                        "(%s)", damaged.count, refused, exc.strerror or exc)
            return
        log.warning("usage ledger: %d spool lines were no record (a line cut by a crash, "
                    "or damaged) and are skipped; %d of them kept in %s", damaged.count,
                    len(damaged.lines), refused)

    def _set_aside(self, rows: list[LedgerRow]) -> None:
        """Rows the database refuses whatever its state (a value it cannot store): kept
        for the operator beside the spool, so that they no longer stop its replay (and
        with it, the retention and the budgets' refresh that come after it)."""
        refused = self._refused_path
        with open(refused, "ab") as file:
            file.write(_lines(rows))
        log.error("usage ledger: %d spooled records the database refuses set aside in %s",
                  len(rows), refused)


def _lines(rows: Iterable[LedgerRow]) -> bytes:
    """`rows` as the spool's lines: a record each, its fields in order (orjson reads the
    dataclass itself, ~5 µs a row; through `dataclasses.asdict`, ~60)."""
    return b"".join(orjson.dumps(record_of(r), option=orjson.OPT_APPEND_NEWLINE)
                    for r in rows)


def _cut_line_ended(fd: int, size: int) -> bytes:
    """A newline when the spool's last line was cut by a crash (a worker killed
    mid-append): the lines appended after it start on their own, not glued to it and
    skipped with it by the replay."""
    return b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""


# What a batch raises when a row's values are refused (not when the database is locked,
# read-only, gone or full: those are sqlite3.OperationalError, and the spool waits).
_REFUSED = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError,
            OverflowError, TypeError, ValueError)


def _write_all(store: LedgerStore, parts: Iterable[list[LedgerRow]],
               ) -> tuple[int, list[LedgerRow]]:
    """Each of `parts` written in one transaction, or, refused, each of its rows alone:
    how many rows, and those refused. A database error is raised."""
    written = 0
    refused: list[LedgerRow] = []
    for part in parts:
        try:
            store.write_rows(part)
        except _REFUSED:
            refused += _one_by_one(store, part)
        written += len(part)
    return written, refused


def _one_by_one(store: LedgerStore, rows: list[LedgerRow]) -> list[LedgerRow]:
    """A refused batch's rows written each alone: those refused again."""
    refused: list[LedgerRow] = []
    for row in rows:
        try:
            store.write_rows([row])
        except _REFUSED:
            refused.append(row)
    return refused


# The bytes of a spool's damaged lines kept in `.refused` at most, per replay.
_DAMAGED_KEPT = 1 << 20


class _Damaged:
    """A replay's lines that read as no record: counted, the first of them kept (up to
    `_DAMAGED_KEPT` bytes: a damaged spool may be all garbage)."""

    def __init__(self) -> None:
        self.count = 0
        self.lines: list[bytes] = []
        self._room = _DAMAGED_KEPT

    def add(self, line: bytes) -> None:
        self.count += 1
        if len(line) <= self._room:
            self._room -= len(line)
            self.lines.append(line if line.endswith(b"\n") else line + b"\n")


def _batches(lines: Iterable[bytes], size: int, damaged: _Damaged,
             ) -> Iterator[list[LedgerRow]]:
    """The rows of the lines that read as records (`_from_line`), `size` at a time; the
    others, but blank ones, go to `damaged`."""
    def rows() -> Iterator[LedgerRow]:
        for line in lines:
            row = _from_line(line)
            if row is not None:
                yield row
            elif line.strip():
                damaged.add(line)

    read = rows()
    while part := list(islice(read, size)):
        yield part


_TOKEN_FIELDS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")


def _from_line(line: bytes) -> LedgerRow | None:
    if not line.strip():
        return None
    try:
        fields = orjson.loads(line)
        for name in _TOKEN_FIELDS:  # a count no writer takes (spooled by an older one)
            count = fields.get(name)
            if type(count) is int and count > MAX_TOKENS:
                fields[name] = MAX_TOKENS
        return row_of(UsageRecord(**fields))
    # A line cut by a crash, or damaged into values no record has (an unknown usage
    # source: KeyError; a time past year 9999: ValueError, OverflowError): skipped, the
    # rest still counts. Raised, it stopped every replay, and the budgets' refresh and
    # the retention that come after it.
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        return None
