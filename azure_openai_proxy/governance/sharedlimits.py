"""Rate-limit state shared by the worker processes of one server (`--workers N`), so a
key's RPM, TPM and parallel limits hold across all of them instead of multiplying by N.

The parent creates the table (`SharedLimits.create`) before it starts the workers, and
passes the value (a path and two sizes: it pickles, the workers are spawned); each worker
maps it (`SharedLimits.open`) and `RateLimiter.share`s it. The parent zeroes a dead
worker's in-flight column (`SharedTable.reset_worker`) and removes the file at exit.
The only governance module with OS state: a file, a mapping and a lock. `pull`, `push`
and `configure_shared` copy a subject's state between its row and the limiter's
(governance/ratelimit.py) around each decision.

The table is a file (in /dev/shm where it can be: memory, never written to disk) of
`slots` rows of doubles, read and written through a `memoryview` cast to "d":

    0     tag: the subject's name hash (52 bits, + 1; 0 marks a free row)
    1-3   RPM: the limit the level was last set for (0: none yet), level, stamp
    4-6   TPM: the same
    7     requests in flight: the total
    8...  requests in flight, one column per worker (their sum is the total)

A subject's row is found by open addressing (linear probing from its hash) when a worker
first plans it, and is never freed (keys are few; a full table is logged once and the
subjects that find no row are counted per worker, as before). Two names with the same
52-bit hash would share a row: with 10,000 subjects, a chance of about 1 in 10^8.

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
import mmap
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from azure_openai_proxy.governance.model import Limits

__all__ = ["ROW_FIXED", "SharedBuckets", "SharedLimits", "SharedTable", "configure_shared",
           "pull", "push"]

log = logging.getLogger("azure_openai_proxy")

ROW_FIXED = 8  # doubles before the in-flight columns
# Offsets in a row (the module docstring draws it).
_RPM_CAP, _RPM_LEVEL, _RPM_STAMP = 1, 2, 3
_TPM_CAP, _TPM_LEVEL, _TPM_STAMP = 4, 5, 6
IN_FLIGHT = 7  # the total of the in-flight columns
DEFAULT_SLOTS = 16384  # rows: 1.3 MB with two workers, 2 MB with eight
_TAG_BITS = 52  # a double holds every integer up to 2**53 exactly


@dataclass(frozen=True)
class SharedLimits:
    """Where a server's shared table lives and its shape: what a worker needs to map it."""

    path: str
    slots: int
    workers: int

    @property
    def stride(self) -> int:
        return ROW_FIXED + self.workers

    @classmethod
    def create(cls, workers: int, slots: int = DEFAULT_SLOTS,
               directory: str | None = None) -> SharedLimits:
        """A new, zeroed table for `workers` workers (the caller `remove`s it)."""
        if directory is None:
            try:  # memory; a container may have it read-only or small: then the temp dir
                return cls.create(workers, slots, "/dev/shm")
            except OSError:
                pass
        fd, path = tempfile.mkstemp(prefix="azure-openai-proxy-limits-", dir=directory)
        try:
            # Allocated now, not page by page later: a full tmpfs would fail a worker's
            # write into the mapping with SIGBUS.
            os.posix_fallocate(fd, 0, slots * (ROW_FIXED + workers) * 8)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return cls(path, slots, workers)

    def open(self, worker: int) -> SharedTable:
        """The table as worker number `worker` (0 to workers - 1) uses it."""
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker {worker} is not one of {self.workers}")
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
        self.column = ROW_FIXED + worker  # this worker's in-flight column in a row
        self._fd = os.open(spec.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, spec.slots * spec.stride * 8)
        self.cells = memoryview(self._map).cast("d")
        # Called twice a request: C callables, no Python frame.
        self.lock: Callable[[], object] = functools.partial(fcntl.flock, self._fd, fcntl.LOCK_EX)
        self.unlock: Callable[[], object] = functools.partial(fcntl.flock, self._fd, fcntl.LOCK_UN)
        self._full_logged = False

    def row(self, name: str) -> int | None:
        """The offset of `name`'s row in `cells`, claimed if it had none; None when the
        table is full (logged once: the subject is then counted by each worker alone)."""
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        hashed = int.from_bytes(digest, "big") >> (64 - _TAG_BITS)
        tag = float(hashed + 1)
        slots, stride, cells = self.spec.slots, self.stride, self.cells
        self.lock()
        try:
            for probe in range(slots):
                offset = (hashed + probe) % slots * stride
                found = cells[offset]
                if found == tag:
                    return offset
                if found == 0.0:
                    cells[offset] = tag
                    return offset
        finally:
            self.unlock()
        if not self._full_logged:
            self._full_logged = True
            log.warning("the shared rate-limit table is full (%d keys and teams): the ones "
                        "beyond it are limited per worker process", slots)
        return None

    def reset_worker(self, worker: int) -> None:
        """Zero `worker`'s in-flight counts in every row (it died: what it held is gone)."""
        column, stride, cells = ROW_FIXED + worker, self.stride, self.cells
        self.lock()
        try:
            for offset in range(0, self.spec.slots * stride, stride):
                held = cells[offset + column]
                if held and cells[offset] != 0.0:
                    # Never below zero (it died mid-write): then more would be let in.
                    cells[offset + IN_FLIGHT] = max(0.0, cells[offset + IN_FLIGHT] - held)
                    cells[offset + column] = 0.0
        finally:
            self.unlock()

    def close(self) -> None:
        self.cells.release()
        self._map.close()
        os.close(self._fd)


class SharedBuckets(Protocol):
    """A subject's state as the limiter keeps it (governance/ratelimit.py `_Subject`):
    what is copied in from its row before a decision and written back after."""

    row: int | None
    rpm: float | None
    rpm_level: float
    rpm_stamp: float
    tpm: float | None
    tpm_level: float
    tpm_stamp: float
    in_flight: int

    def configure(self, limits: Limits, now: float) -> None: ...


def pull(state: SharedBuckets, cells: memoryview[float], row: int) -> None:
    """Copy a subject's shared levels and stamps (of the limits it has here) and its
    in-flight total into `state`."""
    if state.rpm is not None:
        state.rpm_level, state.rpm_stamp = cells[row + _RPM_LEVEL], cells[row + _RPM_STAMP]
    if state.tpm is not None:
        state.tpm_level, state.tpm_stamp = cells[row + _TPM_LEVEL], cells[row + _TPM_STAMP]
    state.in_flight = int(cells[row + IN_FLIGHT])


def push(state: SharedBuckets, cells: memoryview[float], row: int, column: int, change: int) -> None:
    """Write `state`'s levels and stamps back, and this worker's in-flight `change` (to
    its column and to the total)."""
    if state.rpm is not None:
        cells[row + _RPM_LEVEL], cells[row + _RPM_STAMP] = state.rpm_level, state.rpm_stamp
    if state.tpm is not None:
        cells[row + _TPM_LEVEL], cells[row + _TPM_STAMP] = state.tpm_level, state.tpm_stamp
    if change:
        held = cells[row + column] + change
        if held >= 0:  # a column zeroed by a reset is not taken below zero
            cells[row + column] = held
            cells[row + IN_FLIGHT] += change


def configure_shared(state: SharedBuckets, limits: Limits, table: SharedTable,
                     clock: Callable[[], float]) -> None:
    """A shared subject's `configure`: its buckets are set up from the limit the table
    last saw (by any worker): full when new, kept up to a new minute."""
    row, cells = state.row, table.cells
    assert row is not None
    table.lock()
    try:
        now = clock()
        pull(state, cells, row)
        state.configure(limits, now)  # this worker's caps and rates; levels refilled
        for cap, at in ((state.rpm, row + _RPM_CAP), (state.tpm, row + _TPM_CAP)):
            if cap is None:
                continue
            # A bucket's level and stamp follow its limit (`_RPM_CAP`, `_RPM_LEVEL`, ...).
            if cells[at] == 0.0:  # the first limit anyone set: a full minute
                cells[at + 1], cells[at + 2] = cap, now
            elif cells[at] != cap:
                cells[at + 1] = min(cells[at + 1], cap)
            cells[at] = cap
        pull(state, cells, row)
    finally:
        table.unlock()
