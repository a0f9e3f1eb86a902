"""Budget holds shared by the worker processes of one server (`--workers N`), so that a
key's and a team's requests in flight, and their costs not yet in every worker's book,
count against their budgets in every worker instead of only the one that admitted them.

The parent creates the table (`holds_table`, a governance/sharedlimits.py table of another
shape) before it starts the workers; each worker maps it and `BudgetGuard.share`s it
(governance/budget.py). A row, found as the limits' are (open addressing on the
subject's name hash), is

    0     tag: the subject's name hash ("key:ID", "team:ID")
    1     USD held: the total of the columns
    2...  USD held, one column per worker: what it has reserved or settled and not yet
          released (its `BudgetGuard`'s holds and lingering costs, below)

and the row after the subjects' holds, per worker, the `time.monotonic()` at which the
book it is using was read from the database (0: none yet, or the worker is gone).

Each worker writes only its own column, and writes it whole (what its guard holds for
that subject, never a difference): a hold counts once whatever happens, and a column is
never below zero. A worker decides on the book it read plus what it holds itself plus
the others' columns. A subject takes a row only once a budgeted request of it is held
(a key without a budget never has one), and a row nothing is held in goes to another
subject when the table has no free one (nothing is lost: a row held in is never taken).

A worker's costs leave its own holds as soon as its book has their records, as with one
worker; they leave its column later, when every worker's book has them: each book read
is stamped, and a cost found in the read that began at `t` lingers in the column until
every other worker's last read began at `t` or later (a record committed before `t` is
in every book read after it), or `MAX_LINGER` seconds at most (a worker whose reads have
stopped is not waited for forever). Meanwhile a worker whose book already has the record
counts it twice: the safe side, for a few seconds. A cost added to a worker's book
without a read (its records spooled while the database fails: `SpendBook.plus`) lingers
from then: the others' books will not have it until the spool is written, and while
the database fails theirs are not read again either.

A worker that exits (or dies) takes its column with it, a little later: the parent zeroes
its stamp at once and its column once every live worker's book was read after the exit,
or `MAX_LINGER` (`ExitedColumns`): what it committed is then in every book; what it held
for requests that died with it is counted those few seconds more (the safe side). The lock is
the table's `flock`, released by the kernel when its holder dies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from azure_openai_proxy.governance.sharedlimits import SharedLimits, SharedTable, tag_of

__all__ = ["HOLD_COLUMNS", "MAX_LINGER", "ExitedColumns", "Owner", "SharedHolds",
           "holds_table"]

Owner = tuple[str, str]  # ("key", key id) or ("team", team id)
HOLD_COLUMNS = 2  # tag, total: the columns before the per-worker ones
_TOTAL = 1
# The longest a cost lingers in a worker's column once its own book has it: two of the
# ledger's book refreshes (every 2 s) and some. A worker whose reads stopped (its
# database failing) has a stale book whatever is held for it.
MAX_LINGER = 10.0


def _tag(owner: Owner) -> float:
    return tag_of(f"{owner[0]}:{owner[1]}")


def holds_table(workers: int, directory: str | None = None) -> SharedLimits:
    """A new budget holds table for `workers` workers (the caller `remove`s it), in
    `directory` (None: /dev/shm, else the temp dir)."""
    return SharedLimits.create(workers, directory=directory, fixed=HOLD_COLUMNS)


class SharedHolds:
    """One worker's side of the budget holds table: its column of each subject's row,
    and the others' totals. Call `put` and `mark_read` with `lock()` held, and from one
    thread at a time (the guard's own lock sees to it: flock does not exclude the
    threads of one process). `others` may also be read without the lock: a look, which
    a decision repeats under it."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table
        self.lock = table.lock
        self.unlock = table.unlock
        self._rows: dict[Owner, tuple[int, float]] = {}  # a subject's row, and its tag
        self._first = table.spec.fixed  # the first per-worker column

    def others(self, owner: Owner) -> float:
        """What the other workers hold for `owner` (a subject without a row: nothing)."""
        known = self._rows.get(owner)
        cells = self.table.cells
        if known is None or cells[known[0]] != known[1]:
            tag = known[1] if known is not None else _tag(owner)
            row = self.table.find(tag)
            if row is None:
                return 0.0
            known = self._rows[owner] = row, tag
        row = known[0]
        return max(0.0, cells[row + _TOTAL] - cells[row + self.table.column])

    def put(self, owner: Owner, usd: float) -> None:
        """Set this worker's column of `owner`'s row to `usd` (≥ 0), and the row's total
        to the sum of its columns. A subject with nothing held and no row takes none."""
        row = self._row(owner, claim=usd > 0.0)
        if row is None:
            return
        cells, first = self.table.cells, row + self._first
        cells[row + self.table.column] = max(usd, 0.0)
        cells[row + _TOTAL] = math.fsum(cells[first:first + self.table.spec.workers])

    def _row(self, owner: Owner, *, claim: bool) -> int | None:
        known = self._rows.get(owner)
        cells = self.table.cells
        if known is not None and cells[known[0]] == known[1]:
            return known[0]
        if not claim:
            return None
        tag = known[1] if known is not None else _tag(owner)
        row = self.table.claim(tag, 0.0)  # a row held in is never idle: only those are taken
        if row is None:
            self._rows.pop(owner, None)
            return None
        self._rows[owner] = row, tag
        return row

    def mark_read(self, stamp: float) -> None:
        """This worker's book was read from the database at `stamp` (monotonic)."""
        self.table.cells[self.table.spec.workers_row + self.table.column] = stamp

    def oldest_read(self) -> float:
        """When the oldest book among the workers' was read (-inf: none was: no book has
        anything, and what lingers waits `MAX_LINGER`)."""
        cells, start = self.table.cells, self.table.spec.workers_row + self._first
        reads = [s for s in cells[start:start + self.table.spec.workers] if s > 0.0]
        return min(reads, default=-math.inf)


class ExitedColumns:
    """The parent's side of the table: a worker that exited keeps its column until every
    live worker's book was read after the exit (the records it committed are then in
    every book), or `MAX_LINGER`; its read stamp is zeroed at once (no one waits for it).
    Zeroed at once, the costs it released in its last seconds would be counted by no
    worker until their next read. Call from one thread (the parent's supervision)."""

    def __init__(self, spec: SharedLimits,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._monotonic = monotonic
        self._exited: dict[int, float] = {}  # worker -> when its exit was seen

    def exited(self, worker: int) -> None:
        table = SharedTable(self.spec, worker)
        try:
            table.lock()
            try:
                table.cells[self.spec.workers_row + table.column] = 0.0
            finally:
                table.unlock()
        finally:
            table.close()
        self._exited[worker] = self._monotonic()

    def waiting(self, worker: int) -> bool:
        """Whether `worker`'s column is still kept (a replacement must not count in it)."""
        return worker in self._exited

    def reset_due(self, every: bool = False) -> float | None:
        """Reset the columns every live book has (`every`: all of them, no worker is
        left); the seconds until the next one is due at the latest (None: none left)."""
        if not self._exited:
            return None
        now = self._monotonic()
        try:
            oldest = -math.inf if every else self._oldest_live_read()
        except OSError:  # the table left its directory (a clean-up of /dev/shm): no
            self._exited.clear()  # column is left to keep, nor a replacement to hold back
            raise
        for worker, at in list(self._exited.items()):
            if every or at <= oldest or now >= at + MAX_LINGER:
                del self._exited[worker]
                self.spec.reset_worker(worker)
        return min((at + MAX_LINGER - now for at in self._exited.values()), default=None)

    def _oldest_live_read(self) -> float:
        table = SharedTable(self.spec, 0)
        try:
            return SharedHolds(table).oldest_read()
        finally:
            table.close()
