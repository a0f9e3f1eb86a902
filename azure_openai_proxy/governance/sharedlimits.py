"""Rate-limit state shared by the worker processes of one server (`--workers N`), so a
key's RPM, TPM and parallel limits hold across all of them instead of multiplying by N.

The parent creates the table (`SharedLimits.create`) before it starts the workers, and
passes the value (a path and two sizes: it pickles, the workers are spawned); each worker
maps it (`SharedLimits.open`) and `RateLimiter.share`s it. The parent zeroes a dead
worker's in-flight column (`SharedTable.reset_worker`) and removes the file at exit (or
the next server does, `sweep`).
The only governance module with OS state: a file, a mapping and a lock.
governance/sharedrows.py copies a subject's state between its row and the limiter's
(governance/ratelimit.py) around each decision, and sets a row's limits.

The table is a file (in /dev/shm where it can be: memory, never written to disk) of
`slots` rows of doubles, read and written through a `memoryview` cast to "d":

    0     tag: the subject's name hash (52 bits, + 1; 0 marks a free row, -1 a freed one)
    1-3   RPM: the limit the level was last set for (0: none yet), level, stamp
    4-6   TPM: the same
    7     the parallel limit + 1 (0: none yet)
    8     the version of the limits in 1-7 (sharedrows.py; 0: none)
    9     requests in flight: the total
    10... requests in flight, one column per worker (their sum is the total)

The same machinery keeps budgets' holds (governance/sharedholds.py) in a second table of
another shape (`fixed` columns before the per-worker ones; the last of them is always
their total): there a row is `tag, USD held: the total, USD held per worker`. After the
`slots` rows comes one more, never probed: per-worker values that belong to no subject
(the budget table's: when each worker last read its book), zeroed with a dead worker's;
in the rate-limit table, its `VERSION` column counts the rows whose limits were set
(sharedrows.py `adopt`), its `REWINDS` column the reloads that found the store gone back
to an older copy (sharedrows.py `note_reload`).

A subject's row is found by open addressing (linear probing from its hash, at most
`PROBES` rows: past them, or when the table is full, the subject is counted per worker,
as before, and a warning is logged once) when a worker first plans it with some limit
(or a reload changes it, sharedrows.py `set_rows`): a key or team that never had one
takes no row; one whose limits were removed keeps it (its version says so to the other
workers, sharedrows.py). A deleted key's or team's row is given back by
the first worker that reloads its keys without it (`RateLimiter.forget`), once no worker
has a request in flight in it; it is then marked freed (tag -1), not free, so that the
names probed past it are still found, and the next name probing through it takes it.
When no row is free within `PROBES`, a row with nothing in flight and no take for
`IDLE_SECONDS` (its buckets full again, no TPM debt left: nothing is lost) goes to the
new name: rows of keys no longer used, or left by a worker that died, do not fill the
table for good.
A worker that still has the row it knew reads its tag before each take: another name's
(or freed) means it claims a row again with what it had. Two names with the same
52-bit hash would share a row: with 10,000 subjects, a chance of about 1 in 10^8.

The table's name holds the parent's pid namespace, pid and start time: a parent killed
before it could remove it (SIGKILL, the OOM killer) leaves it, and the next server started
in the same directory and pid namespace removes it (`sweep`: that pid is gone, or was
given to a process started at another time).

Stamps are `time.monotonic()` (the limiter's clock, one per machine, read under the
lock), and a stamp written back never goes below the one in the row: the limiter never
moves a stamp back (`Subject.refill`), whatever a worker's clock reads.

The lock is `fcntl.flock` on the file, which the kernel releases when its holder dies:
a worker killed while holding it never blocks the others (a POSIX semaphore, under
`multiprocessing.Lock`, would stay taken). It is held for the few reads and writes of
one take or settle. Measured on a 2-core VM, a lock and unlock: flock 0.4-0.55 µs,
`fcntl.lockf` 0.7-1.1 µs, `multiprocessing.Lock` 0.07-0.1 µs (uncontended; load 2.2).
flock belongs to the open file, not to the process or thread: only one thread of a
worker (its event loop's) may use its table, and never while it holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import math
import mmap
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IDLE_SECONDS", "IN_FLIGHT", "LAYOUT", "PARALLEL", "PROBES", "REWINDS", "ROW_FIXED",
           "RPM_CAP", "TPM_CAP", "VERSION", "SharedLimits", "SharedTable", "TableLayoutDiffers", "sweep",
           "tag_of"]

log = logging.getLogger("azure_openai_proxy")

ROW_FIXED = 10  # doubles before the in-flight columns
# Offsets in a row (the module docstring draws it).
RPM_CAP, _RPM_LEVEL, _RPM_STAMP = 1, 2, 3
TPM_CAP, _TPM_LEVEL, _TPM_STAMP = 4, 5, 6
PARALLEL = 7  # the parallel limit + 1 (max_parallel may be 0)
VERSION = 8  # the version of the limits the row holds (sharedrows.py)
REWINDS = 1  # in the workers' row: reloads of an older copy of the store (`note_reload`)
IN_FLIGHT = 9  # the total of the in-flight columns
DEFAULT_SLOTS = 16384  # rows: 1.6 MB with two workers, 2.4 MB with eight
_TAG_BITS = 52  # a double holds every integer up to 2**53 exactly
_FREED = -1.0  # the tag of a row given back (a tombstone: probing goes on past it)
PROBES = 64  # rows looked at for a name: past them it is counted per worker
# A row not taken from for this long may go to another name when no other is free: its
# buckets are full again (a TPM level of -limit or more is; one deeper in debt is not
# idle until refilled, `SharedTable._idle`).
IDLE_SECONDS = 120.0
_PREFIX = "azure-openai-proxy-limits-"
# The tables' row layouts in this build: moved on by every change of any of them (1: the
# rate-limit row's `VERSION`, session 28). A table is made per server start, by the
# parent, but a worker replaced after the package was upgraded in place runs the new
# build on the old parent's table: it maps none of another layout (`SharedLimits.open`),
# and counts its limits, holds and contexts alone until the server restarts. So only a
# change that an older build would misread moves it: the workers' row's `REWINDS`
# (session 29) is a cell no build before used (always 0 there) that those builds never
# write, so layout 1 still (an old worker counts no rewind of its own: the new one beside
# it follows the rows, as before, until its own poll).
LAYOUT = 1


class TableLayoutDiffers(OSError):
    """A table made by a build of other row layouts: not mapped (the worker counts alone,
    runtime/workers.py `_opened`)."""


def _kind(fixed: int) -> str:
    return "rate-limit" if fixed == ROW_FIXED else "budget" if fixed == 2 else "context"


def tag_of(name: str) -> float:
    """`name`'s tag: its 52-bit hash + 1 (0 marks a free row), which is also where its
    probing starts (`tag - 1`)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return float((int.from_bytes(digest, "big") >> (64 - _TAG_BITS)) + 1)


@functools.lru_cache(maxsize=8)
def _zeros(stride: int) -> memoryview[float]:
    return memoryview(bytes(stride * 8)).cast("d")


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot; None: no such process). A
    pid is reused; a pid and its start time are not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None


def _namespace() -> str:
    """This process's pid namespace (its inode), or "0" when it cannot be read: pids
    are only compared within one (containers sharing /dev/shm may have others)."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "0"
    digits = link.rpartition("[")[2].rstrip("]")
    return digits if digits.isdigit() else "0"


def sweep(directory: str) -> None:
    """Remove the tables in `directory` whose parent is gone (SIGKILLed, so it could not
    remove its own): named `<prefix><pid namespace>-<pid>-<start time>-...`, of this
    pid namespace, and that pid is no longer running or started at another time (it
    was reused)."""
    namespace = _namespace()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        fields = name[len(_PREFIX):].split("-")
        if (len(fields) < 4 or namespace == "0" or fields[0] != namespace
                or not fields[1].isdigit() or not fields[2].isdigit()
                or _started(int(fields[1])) == fields[2]):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            log.warning("removed a shared table of a server that was killed "
                        "(pid %s): %s", fields[1], name)


@dataclass(frozen=True)
class SharedLimits:
    """Where a server's shared table lives and its shape: what a worker needs to map it.
    `fixed`: the columns of a row before the per-worker ones (the rate limits'
    `ROW_FIXED`, or fewer for a table without buckets: the budgets')."""

    path: str
    slots: int
    workers: int
    fixed: int = ROW_FIXED
    # The build's row layouts the table was made with (`LAYOUT`); 0: a build before it
    # said (its pickled value has none: the class's default is read).
    layout: int = 0

    @property
    def stride(self) -> int:
        return self.fixed + self.workers

    @property
    def workers_row(self) -> int:
        """The offset of the row after the subjects' (`slots`), never probed: per-worker
        values of no subject, in the per-worker columns."""
        return self.slots * self.stride

    @classmethod
    def create(cls, workers: int, slots: int = DEFAULT_SLOTS,
               directory: str | None = None, fixed: int = ROW_FIXED) -> SharedLimits:
        """A new, zeroed table for `workers` workers (the caller `remove`s it). Its name
        holds this process's pid namespace, pid and start time; the tables of parents
        that are gone (killed before they could remove theirs) are removed first."""
        if not 2 <= fixed <= ROW_FIXED:
            raise ValueError(f"a row has 2 to {ROW_FIXED} fixed columns, not {fixed}")
        if directory is None:
            # A killed parent's table may be in either: one that fell back leaves it in
            # the temp dir, which a server made in /dev/shm would never look at.
            sweep(tempfile.gettempdir())
            try:  # memory; a container may have it read-only or small: then the temp dir
                return cls.create(workers, slots, "/dev/shm", fixed)
            except OSError:
                pass
        sweep(directory or tempfile.gettempdir())
        pid = os.getpid()
        fd, path = tempfile.mkstemp(prefix=f"{_PREFIX}{_namespace()}-{pid}-{_started(pid)}-",
                                    dir=directory)
        try:
            # Allocated now, not page by page later: a full tmpfs would fail a worker's
            # write into the mapping with SIGBUS.
            os.posix_fallocate(fd, 0, (slots + 1) * (fixed + workers) * 8)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return cls(path, slots, workers, fixed, LAYOUT)

    def open(self, worker: int) -> SharedTable:
        """The table as worker number `worker` (0 to workers - 1) uses it."""
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker {worker} is not one of {self.workers}")
        if self.layout != LAYOUT:
            # A worker started by a parent of another build (the package upgraded in
            # place, then a worker replaced): its rows are of another shape.
            raise TableLayoutDiffers(f"made by another build (layout {self.layout}, this "
                                     f"build's {LAYOUT})")
        return SharedTable(self, worker)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def reset_worker(self, worker: int) -> None:
        """`SharedTable.reset_worker`, from the parent, which does not keep it mapped."""
        table = SharedTable(self, worker)
        try:
            table.reset_worker(worker)
        finally:
            table.close()


class SharedTable:
    """One process's mapping of a `SharedLimits` table, and its lock."""

    def __init__(self, spec: SharedLimits, worker: int) -> None:
        self.spec = spec
        self.stride = spec.stride
        self.column = spec.fixed + worker  # this worker's column in a row
        self.total = spec.fixed - 1  # the sum of the per-worker columns, in a row
        # In the rate-limit table, the count of rows whose limits were set (the workers'
        # row's `VERSION`, sharedrows.py `adopt`): read at every take, so an offset kept
        # (`spec.workers_row`, two properties, was ~2,400 instructions a take or settle).
        self.rows_set = spec.workers_row + VERSION
        # The store's rewinds (sharedrows.py `note_reload`): in the table, and as this
        # worker last reloaded (its versions are of the store before one it has not read).
        self.rewinds = spec.workers_row + REWINDS
        self._fd = os.open(spec.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, (spec.slots + 1) * spec.stride * 8)
        self.cells = memoryview(self._map).cast("d")
        self.rewinds_seen = self.cells[self.rewinds]
        # Called twice a request: C callables, no Python frame.
        self.lock: Callable[[], object] = functools.partial(fcntl.flock, self._fd, fcntl.LOCK_EX)
        self.unlock: Callable[[], object] = functools.partial(fcntl.flock, self._fd, fcntl.LOCK_UN)
        self._full_logged = False

    def row(self, name: str, now: float | None = None, held: int = 0) -> int | None:
        """The offset of `name`'s row in `cells`, claimed if it had none; None when no
        row is free (or idle, `claim`) within `PROBES` of its place (logged once: the
        subject is then counted by each worker alone). `held`: this worker's requests
        in flight that it counted alone until now (taken before the subject had a
        limit), counted in the row from now on."""
        self.lock()
        try:
            row = self.claim(tag_of(name), now)
            if row is not None and held > 0:
                self.cells[row + self.column] += held
                self.cells[row + self.total] += held
            return row
        finally:
            self.unlock()

    def find(self, tag: float) -> int | None:
        """The row tagged `tag`, or None; claims nothing. Without the lock it is a look
        (a row being claimed meanwhile may be missed): decide with the lock held."""
        slots, stride, cells = self.spec.slots, self.stride, self.cells
        hashed = int(tag) - 1
        for probe in range(min(slots, PROBES)):
            offset = (hashed + probe) % slots * stride
            found = cells[offset]
            if found == tag:
                return offset
            if found == 0.0:
                break
        return None

    def claim(self, tag: float, now: float | None = None) -> int | None:
        """`row`, with the lock held: the row tagged `tag`, else the first free or freed
        one within `PROBES` of its place, else (given the clock's `now`) one idle for
        `IDLE_SECONDS`, zeroed and tagged; else None."""
        slots, stride, cells = self.spec.slots, self.stride, self.cells
        hashed = int(tag) - 1
        freed = idle = None
        for probe in range(min(slots, PROBES)):
            offset = (hashed + probe) % slots * stride
            found = cells[offset]
            if found == tag:
                return offset
            if found == 0.0:
                freed = offset if freed is None else freed
                break
            if found == _FREED:
                if freed is None:
                    freed = offset  # reused unless `tag` is further on
            elif idle is None and now is not None and self._idle(offset, now):
                idle = offset
        if freed is None:
            freed = idle
        if freed is not None:
            cells[freed:freed + stride] = _zeros(stride)
            cells[freed] = tag
            return freed
        if not self._full_logged:
            self._full_logged = True
            log.warning("the shared %s table is full (%d keys and teams): the ones "
                        "beyond it are %s per worker process", _kind(self.spec.fixed),
                        slots, "limited" if self.spec.fixed == ROW_FIXED else "held")
        return None

    def _idle(self, row: int, now: float) -> bool:
        """Whether `row` holds nothing another name's state could not replace: nothing
        in flight (held) and, for rate limits, no take for `IDLE_SECONDS` and no TPM debt
        left (its buckets are full again: a row made anew is the same). Its owner, if any is left, claims
        a row again at its next take (its tag is checked)."""
        cells = self.cells
        if cells[row + self.total] > 0.0:
            return False
        if self.spec.fixed != ROW_FIXED:
            return True
        # A TPM debt stands until refilled (governance/buckets.py `MOST_DEBT_MINUTES`):
        # given away, the next worker to plan its key made it a full bucket.
        stamp, cap = cells[row + _TPM_STAMP], cells[row + TPM_CAP]
        return (cells[row + _RPM_STAMP] <= now - IDLE_SECONDS and stamp <= now - IDLE_SECONDS
                and cells[row + _TPM_LEVEL] + (now - stamp) * cap / 60.0 >= cap)

    def free(self, row: int, tag: float) -> None:
        """Give back `row` if it is still `tag`'s and nothing is in flight in it (its key
        or team was deleted), with the lock held. It is marked freed, not free: the rows
        probed past it stay found."""
        cells = self.cells
        if cells[row] == tag and cells[row + self.total] <= 0.0:
            cells[row:row + self.stride] = _zeros(self.stride)
            cells[row] = _FREED

    def reset_worker(self, worker: int) -> None:
        """Zero `worker`'s column in every row, and its value in the workers' row (it
        died: what it held is gone). Each row's total is made the sum of its columns
        again: one killed between writing its column and the total left the total
        wrong, and nothing else would correct it (a total too high refuses for good)."""
        column, stride, cells = self.spec.fixed + worker, self.stride, self.cells
        total, first, workers = self.total, self.spec.fixed, self.spec.workers
        self.lock()
        try:
            for offset in range(0, self.spec.slots * stride, stride):
                if cells[offset] != 0.0:
                    cells[offset + column] = 0.0
                    kept = math.fsum(cells[offset + first:offset + first + workers])
                    if cells[offset + total] != kept:
                        cells[offset + total] = kept
            cells[self.spec.workers_row + column] = 0.0
        finally:
            self.unlock()

    def close(self) -> None:
        self.cells.release()
        self._map.close()
        os.close(self._fd)
